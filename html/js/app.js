// The web client's page: plain DOM on top of ChatClient (chat-client.js).
// Elements carry data-testid attributes for t/browser/run.mjs.

import { ChatClient } from './chat-client.js';
import { IdbStore } from './store.js';

const $ = id => document.getElementById(id);

let client;
let active = null;                      // the chat on screen
const mediaUrls = new Map();            // media_id -> download URL
const rendered = new Map();             // message key -> {sig, li}

// ----------------------------------------------------------------------
// Names and words

function nameOf(userId) {
    if (client.account && userId === client.account.user_id) {
        return 'You';
    }
    return client.contacts.get(userId) || `User ${userId}`;
}

function chatTitle(chat) {
    if (chat.type === 'group') {
        return chat.title || 'Group';
    }
    const peer = client.peerOf(chat);
    return peer ? nameOf(peer) : 'Chat';
}

function hhmm(ts) {
    return new Date(ts).toLocaleTimeString([], { hour: '2-digit',
                                                 minute: '2-digit' });
}

function lastSeenText(p) {
    if (!p) {
        return '';
    }
    if (p.online) {
        return 'online';
    }
    if (!p.last_seen) {
        return 'offline';
    }
    const d = new Date(p.last_seen);
    const today = new Date().toDateString() === d.toDateString();
    return today ? `last seen today at ${hhmm(p.last_seen)}`
                 : `last seen ${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} at ${hhmm(p.last_seen)}`;
}

function systemText(m) {
    const by = nameOf(m.by || m.from);
    switch (m.event) {
    case 'created':
        return `${nameOf(m.from)} created the group “${m.title}”`;
    case 'renamed':
        return `${nameOf(m.from)} renamed the group to “${m.title}”`;
    case 'member_added':
        return `${by} added ${nameOf(m.user_id)}`;
    case 'member_removed':
        return m.by === m.user_id ? `${nameOf(m.user_id)} left`
                                  : `${by} removed ${nameOf(m.user_id)}`;
    default:
        return m.event || 'system message';
    }
}

function preview(m) {
    if (!m) {
        return '';
    }
    if (m.kind === 'system') {
        return systemText(m);
    }
    if (m.text) {
        return m.text;
    }
    const t = m.media && m.media[0] ? m.media[0].content_type : '';
    return t.startsWith('image/') ? 'Photo' : t.startsWith('video/') ? 'Video'
         : t.startsWith('audio/') ? 'Voice note' : 'Document';
}

function humanSize(n) {
    return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB`
                                             : `${(n / 1048576).toFixed(1)} MB`;
}

function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) {
            continue;
        }
        if (k === 'class') {
            e.className = v;
        } else if (k === 'text') {
            e.textContent = v;
        } else if (k.startsWith('on')) {
            e.addEventListener(k.slice(2), v);
        } else {
            e.setAttribute(k, v === true ? '' : v);
        }
    }
    e.append(...kids.filter(k => k !== null && k !== undefined));
    return e;
}

const SVG = 'http://www.w3.org/2000/svg';

function tickIcon(state) {
    const span = el('span', { class: 'tick', 'data-testid': 'tick',
                              'data-state': state,
                              title: { clock: 'waiting to send', sent: 'sent',
                                       delivered: 'delivered', read: 'read',
                                       failed: 'not sent' }[state],
                              'aria-label': state });
    if (state === 'failed') {
        span.textContent = '!';
        return span;
    }
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 18 12');
    svg.setAttribute('aria-hidden', 'true');
    const paths = state === 'clock'
        ? ['M9 1.5a4.5 4.5 0 1 0 0.01 0z', 'M9 3.5V6l2 1.2']
        : state === 'sent' ? ['M2 6.5l3 3 7-7']
        : ['M1 6.5l3 3 7-7', 'M6.5 9.5l7-7'];
    for (const d of paths) {
        const p = document.createElementNS(SVG, 'path');
        p.setAttribute('d', d);
        svg.append(p);
    }
    span.append(svg);
    return span;
}

// ----------------------------------------------------------------------
// Screens

function showAuth() {
    $('auth').hidden = false;
    $('app').hidden = true;
    $('register-form').hidden = false;
    $('verify-form').hidden = true;
}

function showApp() {
    $('auth').hidden = true;
    $('app').hidden = false;
    $('me').textContent = client.account.mobile || `User ${client.account.user_id}`;
    renderStatus();
    renderChats();
    openChat(active);
}

function renderStatus() {
    const s = client.status;
    const c = $('conn');
    c.dataset.state = s;
    let text = { online: 'online', connecting: 'connecting…',
                 syncing: 'syncing…', offline: 'offline' }[s];
    if (s === 'offline' && client.nextRetry) {
        const secs = Math.max(0, Math.round((client.nextRetry - Date.now()) / 1000));
        text = `offline, retrying in ${secs}s`;
    }
    c.textContent = text;
    $('retry').hidden = s !== 'offline';
    // discreetly: which transport carries the connection
    const t = $('conn-transport');
    t.dataset.transport = client.transportKind;
    t.hidden = client.transportKind !== 'http' || s === 'offline';
}

function renderChats() {
    const list = $('chat-list');
    const chats = [...client.chats.values()];
    const last = c => {
        const m = client.lastMessage(c.chat_id);
        return m ? (m.ts || 0) : (c.created_at || 0);
    };
    chats.sort((a, b) => last(b) - last(a));
    list.replaceChildren(...chats.map(c => {
        const unread = client.unread(c.chat_id);
        const li = el('li', {
            class: 'chat-item', 'data-testid': 'chat-item',
            'data-chat-id': c.chat_id, 'data-type': c.type, tabindex: 0,
            role: 'button', 'aria-current': c.chat_id === active ? 'true' : null,
            onclick: () => openChat(c.chat_id),
            onkeydown: e => {
                if (e.key === 'Enter') {
                    openChat(c.chat_id);
                }
            },
        },
        el('div', { class: 'body' },
           el('div', { class: 'name', 'data-testid': 'chat-name',
                       text: chatTitle(c) }),
           el('div', { class: 'preview', text: preview(client.lastMessage(c.chat_id)) })),
        unread ? el('span', { class: 'badge', 'data-testid': 'unread-badge',
                              'aria-label': `${unread} unread`,
                              text: String(unread) }) : null);
        return li;
    }));
    if (active) {
        const chat = client.chats.get(active);
        if (chat) {
            $('chat-title').textContent = chatTitle(chat);
            renderGroupPanel();
        }
    }
}

function openChat(chatId) {
    const chat = chatId && client.chats.get(chatId);
    if (active !== chatId) {
        rendered.clear();
        $('messages').replaceChildren();
        $('group-panel').hidden = true;
        $('chat-error').textContent = '';
    }
    active = chat ? chatId : null;
    client.setActiveChat(active);
    $('chat').hidden = !active;
    $('empty').hidden = !!active;
    $('app').classList.toggle('in-chat', !!active);
    if (!active) {
        renderChats();
        return;
    }
    $('chat-title').textContent = chatTitle(chat);
    $('group-info').hidden = chat.type !== 'group';
    renderPresence();
    renderMessages();
    renderChats();
}

function renderPresence() {
    const chat = active && client.chats.get(active);
    if (!chat) {
        return;
    }
    if (chat.type === 'group') {
        const n = (chat.members || []).length;
        $('presence').textContent = `${n} member${n === 1 ? '' : 's'}`;
        return;
    }
    $('presence').textContent = lastSeenText(client.presence.get(client.peerOf(chat)));
}

function renderGroupPanel() {
    const chat = client.chats.get(active);
    if (!chat || chat.type !== 'group') {
        return;
    }
    const me = client.account.user_id;
    const admin = (chat.members || []).some(m => m.user_id === me && m.role === 'admin');
    if (document.activeElement !== $('rename-title')) {
        $('rename-title').value = chat.title || '';
    }
    $('members').replaceChildren(...(chat.members || []).map(m =>
        el('li', { 'data-testid': 'member', 'data-user-id': m.user_id },
           el('span', { text: `${nameOf(m.user_id)}${m.role === 'admin' ? ' (admin)' : ''}` }),
           (admin || m.user_id === me)
               ? el('button', { type: 'button', class: 'link',
                                'data-testid': 'remove-member',
                                text: m.user_id === me ? 'Leave' : 'Remove',
                                onclick: () => guard($('chat-error'),
                                    () => client.removeMember(active, m.user_id)) })
               : null)));
    renderPresence();
}

function messageKey(m) {
    if (m.id && m.from === (client.account && client.account.user_id)) {
        return `own:${m.id}`;
    }
    return `seq:${m.seq}`;
}

function renderMessages() {
    const box = $('messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const me = client.account.user_id;
    const chat = client.chats.get(active);
    const nodes = [];
    const keep = new Set();
    for (const m of client.messages(active)) {
        const key = messageKey(m);
        const own = m.from === me && m.kind !== 'system';
        const tick = own ? client.tick(m) : '';
        const sig = `${m.seq}|${tick}|${m.failed || ''}`;
        keep.add(key);
        let r = rendered.get(key);
        if (!r || r.sig !== sig) {
            r = { sig, li: messageNode(m, own, tick, chat) };
            rendered.set(key, r);
        }
        nodes.push(r.li);
    }
    for (const k of [...rendered.keys()]) {
        if (!keep.has(k)) {
            rendered.delete(k);
        }
    }
    box.replaceChildren(...nodes);
    if (atBottom) {
        box.scrollTop = box.scrollHeight;
    }
}

function messageNode(m, own, tick, chat) {
    const attrs = { class: 'msg', 'data-testid': 'message',
                    'data-kind': m.kind || 'text', 'data-dir': own ? 'out' : 'in',
                    'data-seq': m.seq, 'data-id': m.id };
    if (m.kind === 'system') {
        return el('li', attrs, el('span', { 'data-testid': 'msg-text',
                                            text: systemText(m) }));
    }
    if (m.kind === 'expired') {
        const n = m.to_seq - m.seq + 1;
        return el('li', attrs, el('span', { 'data-testid': 'msg-text',
            text: `${n} message${n === 1 ? '' : 's'} expired before reaching this device` }));
    }
    const li = el('li', attrs);
    if (!own && chat && chat.type === 'group') {
        li.append(el('div', { class: 'from', text: nameOf(m.from) }));
    }
    for (const md of m.media || []) {
        li.append(mediaNode(md));
    }
    if (m.text) {
        li.append(el('div', { class: 'text', 'data-testid': 'msg-text', text: m.text }));
    }
    const meta = el('div', { class: 'meta' }, el('time', { text: m.ts ? hhmm(m.ts) : '' }));
    if (own) {
        meta.append(tickIcon(tick));
    }
    if (m.failed) {
        meta.append(el('button', { type: 'button', class: 'link small',
                                   text: `not sent (${m.failed}): discard`,
                                   onclick: () => client.discard(m.id) }));
    }
    li.append(meta);
    return li;
}

function mediaNode(md) {
    const t = md.content_type || '';
    let node;
    if (t.startsWith('image/')) {
        node = el('img', { alt: 'photo', 'data-testid': 'msg-image',
                           'data-media-id': md.media_id });
    } else if (t.startsWith('video/')) {
        node = el('video', { controls: true, preload: 'metadata',
                             'data-testid': 'msg-video' });
    } else if (t.startsWith('audio/')) {
        node = el('audio', { controls: true, preload: 'metadata',
                             'data-testid': 'msg-audio' });
    } else {
        node = el('a', { 'data-testid': 'msg-document', download: true,
                         text: `Document (${t}, ${humanSize(md.size || 0)})` });
    }
    const set = url => {
        if (node.tagName === 'A') {
            node.href = url;
        } else {
            node.src = url;
        }
    };
    const cached = mediaUrls.get(md.media_id);
    if (cached) {
        set(cached);
    } else {
        client.mediaUrl(md.media_id).then(url => {
            mediaUrls.set(md.media_id, url);
            set(url);
        }).catch(e => {
            node.replaceWith(el('span', { class: 'error',
                                          text: `media unavailable (${e.code || e.message})` }));
        });
    }
    return node;
}

// ----------------------------------------------------------------------
// Actions

async function guard(errBox, fn) {
    errBox.textContent = '';
    try {
        return await fn();
    } catch (e) {
        errBox.textContent = e.message || String(e);
        return undefined;
    }
}

function defaultDeviceName() {
    const ua = navigator.userAgent;
    const b = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge'
            : /Chrom/.test(ua) ? 'Chromium' : /Safari\//.test(ua) ? 'Safari'
            : 'Browser';
    return `${b} on ${navigator.platform || 'the web'}`.slice(0, 64);
}

async function sendFile(file) {
    if (!active) {
        return;
    }
    const chatId = active;
    const caption = $('text').value.trim();
    $('upload').hidden = false;
    $('upload-name').textContent = file.name || 'voice note';
    $('upload-progress').value = 0;
    await guard($('chat-error'), async () => {
        const media = await client.uploadMedia(file, {
            onProgress: f => { $('upload-progress').value = f; },
        });
        const t = media.content_type;
        const isDoc = !/^(image|video|audio)\//.test(t);
        const text = caption || (isDoc && file.name ? file.name : undefined);
        await client.send(chatId, { text, media: [media] });
        if (caption) {
            $('text').value = '';
        }
    });
    $('upload').hidden = true;
}

let recorder = null;

async function toggleVoice() {
    const btn = $('voice');
    if (recorder) {
        recorder.stop();
        return;
    }
    await guard($('chat-error'), async () => {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        const chunks = [];
        recorder = new MediaRecorder(stream);
        recorder.ondataavailable = e => chunks.push(e.data);
        recorder.onstop = () => {
            stream.getTracks().forEach(t => t.stop());
            const type = (recorder.mimeType || 'audio/webm').split(';')[0];
            recorder = null;
            btn.setAttribute('aria-pressed', 'false');
            sendFile(new Blob(chunks, { type }));
        };
        recorder.start();
        btn.setAttribute('aria-pressed', 'true');
    });
}

function parsePhones(s) {
    return s.split(/[,\s]+/).map(x => x.trim()).filter(Boolean);
}

function wire() {
    let pendingMobile = null;

    $('register-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('auth-error'), async () => {
            const mobile = $('phone').value.trim();
            const r = await client.register(mobile);
            pendingMobile = mobile;
            $('register-form').hidden = true;
            $('verify-form').hidden = false;
            $('device-name').value ||= defaultDeviceName();
            if (r.dev_code) {
                $('dev-code').hidden = false;
                $('dev-code').textContent = `Development mode: your code is ${r.dev_code}`;
                $('code').value = r.dev_code;
            } else {
                $('dev-code').hidden = true;
                $('code').value = '';
            }
            $('code').focus();
        });
    });

    $('verify-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('auth-error'), () => client.verify(pendingMobile,
                                                   $('code').value.trim(),
                                                   $('device-name').value.trim()));
    });

    $('verify-back').addEventListener('click', () => {
        $('verify-form').hidden = true;
        $('register-form').hidden = false;
    });

    $('link-device-name').value = defaultDeviceName();
    $('link-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('auth-error'), () => client.link($('link-code-input').value.trim(),
                                                 $('link-device-name').value.trim()));
    });

    const toggle = (id) => {
        for (const p of ['new-chat-form', 'new-group-form', 'link-panel']) {
            $(p).hidden = p === id ? !$(p).hidden : true;
        }
    };
    $('new-chat').addEventListener('click', () => {
        toggle('new-chat-form');
        $('new-chat-phone').focus();
    });
    $('new-group').addEventListener('click', () => {
        toggle('new-group-form');
        $('group-title').focus();
    });
    $('link-device').addEventListener('click', () => {
        toggle('link-panel');
        if (!$('link-panel').hidden) {
            $('link-code').textContent = '…';
            guard($('side-error'), async () => {
                $('link-code').textContent = (await client.linkCode()).code;
            });
        }
    });
    $('logout').addEventListener('click', () => client.logout());
    $('retry').addEventListener('click', () => client.reconnectNow());

    $('new-chat-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('side-error'), async () => {
            const mobile = $('new-chat-phone').value.trim();
            const uid = await client.lookup(mobile);
            if (!uid) {
                throw new Error(`${mobile} does not use chat yet`);
            }
            const chat = await client.createDirect(uid);
            $('new-chat-form').hidden = true;
            $('new-chat-phone').value = '';
            openChat(chat.chat_id);
        });
    });

    $('new-group-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('side-error'), async () => {
            const ids = [];
            for (const mobile of parsePhones($('group-phones').value)) {
                const uid = await client.lookup(mobile);
                if (!uid) {
                    throw new Error(`${mobile} does not use chat yet`);
                }
                ids.push(uid);
            }
            const chat = await client.createGroup($('group-title').value.trim(), ids);
            $('new-group-form').hidden = true;
            $('group-title').value = '';
            $('group-phones').value = '';
            openChat(chat.chat_id);
        });
    });

    $('back').addEventListener('click', () => openChat(null));
    $('group-info').addEventListener('click', () => {
        $('group-panel').hidden = !$('group-panel').hidden;
        renderGroupPanel();
    });
    $('rename-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('chat-error'), () => client.renameGroup(active, $('rename-title').value.trim()));
    });
    $('add-member-form').addEventListener('submit', e => {
        e.preventDefault();
        guard($('chat-error'), async () => {
            const mobile = $('add-member-phone').value.trim();
            const uid = await client.lookup(mobile);
            if (!uid) {
                throw new Error(`${mobile} does not use chat yet`);
            }
            await client.addMember(active, uid);
            $('add-member-phone').value = '';
        });
    });

    $('composer').addEventListener('submit', e => {
        e.preventDefault();
        const text = $('text').value;
        if (!text.trim() || !active) {
            return;
        }
        $('text').value = '';
        guard($('chat-error'), () => client.send(active, { text }));
    });
    $('text').addEventListener('keydown', e => {
        if (e.key === 'Enter' && !e.shiftKey) {
            e.preventDefault();
            $('composer').requestSubmit();
        }
    });
    $('attach').addEventListener('change', () => {
        const f = $('attach').files[0];
        $('attach').value = '';
        if (f) {
            sendFile(f);
        }
    });
    $('voice').addEventListener('click', toggleVoice);

    document.addEventListener('visibilitychange', () =>
        client.setVisible(document.visibilityState === 'visible'));
    window.addEventListener('online', () => client.reconnectNow());
    setInterval(() => {
        if (client.status === 'offline') {
            renderStatus();
        }
    }, 1000);
}

async function main() {
    const store = await IdbStore.open();
    client = new ChatClient({ store });
    // for the browser suite and for curious people: the page's client
    window.chat = client;
    client.setVisible(document.visibilityState === 'visible');
    wire();

    client.addEventListener('account', e => {
        if (e.detail.account) {
            showApp();
        } else {
            active = null;
            showAuth();
        }
    });
    client.addEventListener('status', renderStatus);
    client.addEventListener('chats', () => {
        renderChats();
        if (active && !client.chats.has(active)) {
            openChat(null);
        }
    });
    client.addEventListener('messages', e => {
        if (e.detail.chat_id === active) {
            renderMessages();
        }
    });
    client.addEventListener('presence', renderPresence);
    client.addEventListener('error', e => {
        if (e.detail.id) {
            $('chat-error').textContent = `not sent: ${e.detail.message || e.detail.code}`;
        }
    });

    await client.start();
    if (!client.account) {
        showAuth();
    }
    document.body.dataset.ready = '1';
}

main();
