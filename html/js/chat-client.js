// ChatClient: a client of the chat wire protocol v1 (PROTOCOL.md), with
// no DOM in it, for the web client and for anyone else.
//
//   import { ChatClient } from './chat-client.js';
//   import { IdbStore } from './store.js';
//
//   const client = new ChatClient({ store: await IdbStore.open() });
//   await client.start();                    // loads the device's state
//   if (!client.account) {
//       const { dev_code } = await client.register('+15551234567');
//       await client.verify('+15551234567', code, 'my laptop');
//   }
//   client.addEventListener('messages', e => render(e.detail.chat_id));
//   client.send(chatId, { text: 'hi' });
//
// What it does for its user:
// - REST: accounts, devices and link codes, lookup, chats and groups, media.
// - The connection: a transport per attempt, reconnect with exponential
//   backoff and jitter, an application ping to notice a dead socket.
//   WebSocket first (transport-ws.js); after FALLBACK_AFTER connects in a
//   row that never opened a socket (a proxy or firewall that refuses the
//   upgrade) the HTTP fallback (transport-http.js: long-poll GET
//   /v1/events, POST /v1/send|ack|read|presence). On the fallback every
//   WS_RETRY_EVERY-th connect tries the WebSocket again, and a fallback
//   that stays up probes for it (a bare WebSocket opened and closed) after
//   `wsProbe` ms, doubling up to 8 times that: once the network lets
//   WebSockets through again the client goes back to them. An HTTP
//   connect that fails too is no sign of a hostile proxy (the network is
//   down): the next connect is a WebSocket again. `transportKind` says
//   which is in use ('ws' | 'http'). The option `transport` forces one:
//   'ws', 'http', or a factory (client) => transport (see transport-ws.js
//   for the five members; a `kind` member names it, 'ws' if absent).
// - Delivery: every `msg` is stored (deduplicated by chat_id and seq) before
//   it is acked; acks are cumulative per chat and batched.
// - Sending: an outbox kept in the store; each message has a random client
//   id kept across resends, so a resend after a reconnect gets the stored
//   seq back instead of a duplicate (PROTOCOL.md 5.4).
// - Receipts, read marks, unread counts, presence.
//
// Events (CustomEvent, details in `detail`):
//   status    {status: 'offline'|'connecting'|'syncing'|'online',
//              transport: 'ws'|'http'}  (the one in use or being tried)
//   account   {account} (null after logout)
//   chats     {}                  the chat list or an unread count changed
//   messages  {chat_id}           a chat's messages, ticks or outbox changed
//   presence  {user_id}
//   error     {code, message, id?, chat_id?}

import { WebSocketTransport } from './transport-ws.js';
import { HttpTransport } from './transport-http.js';

export class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
        super(message || code || `HTTP ${status}`);
        this.status = status;
        this.code = code;
        this.retryAfter = retryAfter;
    }
}

// 128 random bits in base64url: a client message id (1-64 chars).
export function randomId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    let s = '';
    for (const x of b) {
        s += String.fromCharCode(x);
    }
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const PING_EVERY = 25000;       // ms between application pings
const PING_TIMEOUT = 10000;     // no pong by then: the socket is dead
const ACK_DELAY = 200;          // acks are batched for this long
const RETRY_SEND = 2000;        // after rate_limited / unavailable
const FALLBACK_AFTER = 3;       // connects without an open socket: HTTP
const WS_RETRY_EVERY = 5;       // on the fallback, every 5th connect: WS
const WS_PROBE = 60000;         // first probe for WebSockets on a fallback
const PROBE_TIMEOUT = 10000;    // a probe that neither opens nor fails

export class ChatClient extends EventTarget {
    constructor(opts = {}) {
        super();
        const base = opts.baseUrl ?? globalThis.location?.origin ?? '';
        this.baseUrl = base.replace(/\/$/, '');
        this.store = opts.store;
        const forced = opts.transport;
        this.makeTransport = typeof forced === 'function' ? forced
            : forced === 'http' ? () => this._newTransport('http')
            : forced === 'ws' ? () => this._newTransport('ws')
            : null;             // null: WebSocket first, then the fallback
        this.wsProbe = opts.wsProbe ?? WS_PROBE;
        this.backoff = { base: 500, max: 15000, ...(opts.backoff || {}) };

        this.account = null;
        this.chats = new Map();         // chat_id -> chat
        this.msgs = new Map();          // chat_id -> Map(seq -> message)
        this.outbox = new Map();        // id -> entry, in order of creation
        this.marks = new Map();         // chat_id -> Map(user_id -> marks)
        this.presence = new Map();      // user_id -> {online, last_seen}
        this.contacts = new Map();      // user_id -> mobile
        this.clientIds = new Set();     // "chat_id/from_device/id" held

        this.status = 'offline';
        this.transport = null;
        this.ready = false;
        this.failures = 0;              // connects in a row that failed
        this.upgradeFailures = 0;       // ... without ever opening a socket
        this.transportKind = 'ws';      // of the transport in use or tried
        this.fallback = false;          // WebSockets refused: HTTP for now
        this._fallbackConnects = 0;     // connects since the fallback began
        this._probeTimer = null;
        this._probeDelay = this.wsProbe;
        this._probe = null;
        this.activeChat = null;
        this.visible = true;
        this.stopped = true;

        this._queue = Promise.resolve();  // server events, one at a time
        this._acks = new Map();
        this._ackTimer = null;
        this._reconnectTimer = null;
        this._pingTimer = null;
        this._pongTimer = null;
        this._subscribed = new Set();
        this._mediaUrls = new Map();
        this._chatsRefresh = null;
    }

    // ------------------------------------------------------------------
    // Lifecycle

    // Loads what the store holds and connects when there is an account.
    async start() {
        const acct = await this.store.get('kv', 'account');
        this.account = acct ? acct.v : null;
        const contacts = await this.store.get('kv', 'contacts');
        this.contacts = new Map(Object.entries(contacts ? contacts.v : {}));
        for (const c of await this.store.getAll('chats')) {
            this.chats.set(c.chat_id, c);
        }
        for (const m of await this.store.getAll('messages')) {
            this._msgMap(m.chat_id).set(m.seq, m);
            this._noteClientId(m);
        }
        const out = await this.store.getAll('outbox');
        out.sort((a, b) => a.created - b.created);
        for (const e of out) {
            this.outbox.set(e.id, e);
        }
        for (const mk of await this.store.getAll('marks')) {
            this._markMap(mk.chat_id).set(mk.user_id, mk);
        }
        this.stopped = false;
        if (this.account) {
            this._emit('account', { account: this.account });
            this.connect();
        }
    }

    // Stops reconnecting and closes the connection.
    stop() {
        this.stopped = true;
        clearTimeout(this._reconnectTimer);
        this._drop('stopped');
    }

    async _setAccount(acct) {
        this.account = acct;
        await this.store.put('kv', { k: 'account', v: acct });
        this._emit('account', { account: acct });
        this.stopped = false;
        this.connect();
    }

    // Forgets everything this device holds (the server keeps the device).
    async logout() {
        this.stop();
        await this.store.clear();
        this.account = null;
        this.chats.clear();
        this.msgs.clear();
        this.outbox.clear();
        this.marks.clear();
        this.presence.clear();
        this.contacts.clear();
        this._emit('account', { account: null });
    }

    // ------------------------------------------------------------------
    // HTTP

    async api(method, path, body, { auth = true } = {}) {
        const headers = {};
        if (body !== undefined) {
            headers['Content-Type'] = 'application/json';
        }
        if (auth && this.account) {
            headers.Authorization = `Bearer ${this.account.token}`;
        }
        const r = await fetch(this.baseUrl + path, {
            method, headers,
            body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await r.text();
        let json = null;
        try {
            json = text ? JSON.parse(text) : null;
        } catch {
            json = null;
        }
        if (!r.ok) {
            const e = (json && json.error) || {};
            const err = new ApiError(r.status, e.code, e.message,
                                     r.headers.get('Retry-After'));
            if (r.status === 401 && auth && this.account) {
                // the token is dead (device unlinked): start over
                this.logout();
            }
            throw err;
        }
        return json;
    }

    // -> {expires_in, dev_code?}
    register(mobile) {
        return this.api('POST', '/v1/register', { mobile }, { auth: false });
    }

    async verify(mobile, code, deviceName) {
        const r = await this.api('POST', '/v1/verify',
                                 { mobile, code, device_name: deviceName },
                                 { auth: false });
        await this._setAccount({ ...r, mobile, device_name: deviceName });
        return this.account;
    }

    // -> {code, expires_in}: for a new device of this account
    linkCode() {
        return this.api('POST', '/v1/devices/link-code');
    }

    async link(code, deviceName) {
        const r = await this.api('POST', '/v1/devices/link',
                                 { code, device_name: deviceName },
                                 { auth: false });
        this.account = { ...r, device_name: deviceName };
        const me = await this.api('GET', '/v1/me');
        await this._setAccount({ ...this.account, mobile: me.mobile });
        return this.account;
    }

    async devices() {
        return (await this.api('GET', '/v1/devices')).devices;
    }

    // -> user_id, or null when nobody has that number
    async lookup(mobile) {
        try {
            const r = await this.api('GET', '/v1/users/lookup?mobile='
                                     + encodeURIComponent(mobile));
            await this.saveContact(r.user_id, mobile);
            return r.user_id;
        } catch (e) {
            if (e.status === 404) {
                return null;
            }
            throw e;
        }
    }

    async saveContact(userId, mobile) {
        this.contacts.set(userId, mobile);
        await this.store.put('kv', { k: 'contacts',
                                     v: Object.fromEntries(this.contacts) });
    }

    // ------------------------------------------------------------------
    // Chats

    async refreshChats() {
        if (this._chatsRefresh) {
            return this._chatsRefresh;
        }
        this._chatsRefresh = (async () => {
            try {
                const { chats } = await this.api('GET', '/v1/chats');
                const seen = new Set();
                for (const c of chats) {
                    seen.add(c.chat_id);
                    await this._putChat(c, false);
                }
                for (const id of [...this.chats.keys()]) {
                    if (!seen.has(id)) {
                        this.chats.delete(id);
                        await this.store.delete('chats', id);
                    }
                }
                this._emit('chats', {});
                this._subscribePresence();
            } finally {
                this._chatsRefresh = null;
            }
        })();
        return this._chatsRefresh;
    }

    async _putChat(c, emit = true) {
        const old = this.chats.get(c.chat_id);
        const chat = { ...old, ...c };
        chat.last_seq = Math.max(c.last_seq || 0, (old && old.last_seq) || 0);
        this.chats.set(c.chat_id, chat);
        await this.store.put('chats', chat);
        if (emit) {
            this._emit('chats', {});
            this._subscribePresence();
        }
        return chat;
    }

    async createDirect(userId) {
        return this._putChat(await this.api('POST', '/v1/chats',
                                            { type: 'direct',
                                              user_id: userId }));
    }

    async createGroup(title, members) {
        return this._putChat(await this.api('POST', '/v1/chats',
                                            { type: 'group', title,
                                              members }));
    }

    async renameGroup(chatId, title) {
        return this._putChat(await this.api('PATCH', `/v1/chats/${chatId}`,
                                            { title }));
    }

    async addMember(chatId, userId) {
        return this._putChat(await this.api('POST',
                                            `/v1/chats/${chatId}/members`,
                                            { user_id: userId }));
    }

    async removeMember(chatId, userId) {
        await this.api('DELETE', `/v1/chats/${chatId}/members/${userId}`);
        await this.refreshChats();
    }

    // The other user of a direct chat.
    peerOf(chat) {
        if (!chat || chat.type !== 'direct' || !this.account) {
            return null;
        }
        const m = (chat.members || []).find(x => x.user_id !== this.account.user_id);
        return m ? m.user_id : null;
    }

    // ------------------------------------------------------------------
    // Messages as the UI shows them

    // A chat's messages in seq order, then its outbox in order of creation.
    messages(chatId) {
        const held = [...this._msgMap(chatId).values()]
            .sort((a, b) => a.seq - b.seq);
        const queued = [...this.outbox.values()]
            .filter(e => e.chat_id === chatId)
            .map(e => ({ ...e, from: this.account && this.account.user_id,
                         kind: 'text', ts: e.created, queued: true }));
        return held.concat(queued);
    }

    lastMessage(chatId) {
        const all = this.messages(chatId).filter(m => m.kind !== 'expired');
        return all[all.length - 1] || null;
    }

    mark(chatId, userId) {
        return this._markMap(chatId).get(userId)
            || { chat_id: chatId, user_id: userId, delivered: 0, read: 0 };
    }

    // Messages of others after this user's read mark (any device's).
    unread(chatId) {
        if (!this.account) {
            return 0;
        }
        const me = this.account.user_id;
        const read = this.mark(chatId, me).read;
        let n = 0;
        for (const m of this._msgMap(chatId).values()) {
            if (m.seq > read && m.from !== me
                && (m.kind === 'text' || m.kind === undefined)) {
                n++;
            }
        }
        return n;
    }

    // The tick of an own message:
    //   'failed'    the server refused it (outbox entry with `failed`)
    //   'clock'     in the outbox, no `sent` yet
    //   'sent'      stored by the server (one grey tick)
    //   'delivered' every other member's delivered mark is >= its seq
    //   'read'      every other member's read mark is >= its seq
    // In a group "every other member" is the members now; a group of one
    // stays at 'sent'.
    tick(m) {
        if (m.queued) {
            return m.failed ? 'failed' : 'clock';
        }
        const chat = this.chats.get(m.chat_id);
        const me = this.account && this.account.user_id;
        const others = ((chat && chat.members) || [])
            .map(x => x.user_id).filter(u => u !== me);
        if (!others.length) {
            return 'sent';
        }
        const marks = others.map(u => this.mark(m.chat_id, u));
        if (marks.every(k => k.read >= m.seq)) {
            return 'read';
        }
        if (marks.every(k => Math.max(k.delivered, k.read) >= m.seq)) {
            return 'delivered';
        }
        return 'sent';
    }

    // ------------------------------------------------------------------
    // Sending

    // Queues a message; it goes out now if connected, else on reconnect.
    // media: [{media_id, content_type, size}] (as uploadMedia returns)
    async send(chatId, { text, media } = {}) {
        const entry = { id: randomId(), chat_id: chatId, created: Date.now() };
        if (text) {
            entry.text = text;
        }
        if (media && media.length) {
            entry.media = media;
        }
        await this.store.put('outbox', entry);
        this.outbox.set(entry.id, entry);
        this._emit('messages', { chat_id: chatId });
        this._emit('chats', {});
        this._sendEntry(entry);
        return entry;
    }

    // Drops a failed outbox entry.
    async discard(id) {
        const e = this.outbox.get(id);
        if (e) {
            this.outbox.delete(id);
            await this.store.delete('outbox', id);
            this._emit('messages', { chat_id: e.chat_id });
        }
    }

    _sendEntry(e) {
        if (!this.ready || e.failed) {
            return;
        }
        const obj = { type: 'send', id: e.id, chat_id: e.chat_id };
        if (e.text) {
            obj.text = e.text;
        }
        if (e.media) {
            obj.media = e.media.map(x => x.media_id);
        }
        this.transport.send(obj);
    }

    _flushOutbox() {
        for (const e of this.outbox.values()) {
            this._sendEntry(e);
        }
    }

    // ------------------------------------------------------------------
    // Reading

    // The chat on screen (null for none) and whether the page is seen:
    // an active chat on a visible page is read as messages come in.
    setActiveChat(chatId) {
        this.activeChat = chatId;
        this._autoRead();
    }

    setVisible(visible) {
        this.visible = visible;
        this._autoRead();
    }

    _autoRead() {
        if (this.activeChat && this.visible) {
            this.markRead(this.activeChat);
        }
    }

    // Marks everything this device holds in the chat as read.
    markRead(chatId) {
        if (!this.account) {
            return;
        }
        const me = this.account.user_id;
        let last = 0;
        for (const m of this._msgMap(chatId).values()) {
            if (m.from !== me && m.seq > last) {
                last = m.seq;
            }
        }
        const mk = this.mark(chatId, me);
        if (last <= mk.read || !this.ready) {
            return;
        }
        this.transport.send({ type: 'read', chat_id: chatId, seq: last });
        this._raiseMark(chatId, me, 'read', last);
        this._emit('chats', {});
    }

    // ------------------------------------------------------------------
    // Media (PROTOCOL.md section 3)

    // Announces and uploads a Blob/File; onProgress(fraction 0..1).
    // -> {media_id, content_type, size}
    async uploadMedia(blob, { contentType, onProgress } = {}) {
        const type = (contentType || blob.type || 'application/octet-stream')
            .split(';')[0].trim().toLowerCase();
        const body = { content_type: type, size: blob.size };
        if (globalThis.crypto && crypto.subtle) {
            const d = await crypto.subtle.digest('SHA-256',
                                                 await blob.arrayBuffer());
            body.sha256 = [...new Uint8Array(d)]
                .map(x => x.toString(16).padStart(2, '0')).join('');
        }
        const m = await this.api('POST', '/v1/media', body);
        await putWithProgress(new URL(m.upload.url, this.baseUrl + '/').href,
                              m.upload.method || 'PUT',
                              m.upload.headers || {}, blob, onProgress);
        return { media_id: m.media_id, content_type: type, size: blob.size };
    }

    // A download URL for a media id (cached until shortly before it expires).
    async mediaUrl(mediaId) {
        const c = this._mediaUrls.get(mediaId);
        if (c && c.expires_at - 30000 > Date.now()) {
            return c.url;
        }
        const m = await this.api('GET', `/v1/media/${encodeURIComponent(mediaId)}`);
        const url = new URL(m.download.url, this.baseUrl + '/').href;
        this._mediaUrls.set(mediaId, { url, expires_at: m.download.expires_at });
        return url;
    }

    // ------------------------------------------------------------------
    // The connection

    connect() {
        if (!this.account || this.transport || this.stopped) {
            return;
        }
        clearTimeout(this._reconnectTimer);
        let t;
        if (this.makeTransport) {
            t = this.makeTransport(this);
            this.transportKind = t.kind || 'ws';
        } else {
            t = this._newTransport(this._chooseKind());
        }
        this.transport = t;
        this._setStatus('connecting', true);
        t.onmessage = obj => {
            if (this.transport === t) {
                this._queue = this._queue.then(() => this._onServer(obj))
                    .catch(e => this._emit('error', { code: 'client',
                                                      message: String(e) }));
            }
        };
        t.onclose = info => {
            if (this.transport === t) {
                this._closed(info);
            }
        };
        t.connect(this.account.token);
    }

    _newTransport(kind) {
        this.transportKind = kind;
        return kind === 'http' ? new HttpTransport(this.baseUrl, this.account)
                               : new WebSocketTransport(wsUrl(this.baseUrl));
    }

    // WebSocket or the HTTP fallback for the next connect.
    _chooseKind() {
        if (!this.fallback) {
            if (this.upgradeFailures < FALLBACK_AFTER) {
                return 'ws';
            }
            this.fallback = true;
            this._fallbackConnects = 0;
            this._probeDelay = this.wsProbe;
        }
        this._fallbackConnects++;
        return this._fallbackConnects % WS_RETRY_EVERY === 0 ? 'ws' : 'http';
    }

    // On a fallback that is up: now and then, see whether a WebSocket
    // opens (no auth: it is closed at once); if it does, leave the
    // fallback for a WebSocket session.
    _scheduleProbe() {
        clearTimeout(this._probeTimer);
        if (!this.fallback || this.makeTransport || !(this._probeDelay > 0)) {
            return;
        }
        this._probeTimer = setTimeout(() => this._runProbe(),
                                      this._probeDelay);
    }

    _runProbe() {
        const t = this.transport;
        if (!t || t.kind !== 'http' || !this.ready) {
            return;
        }
        let ws;
        try {
            ws = new WebSocket(wsUrl(this.baseUrl));
        } catch {
            return;
        }
        const done = opened => {
            clearTimeout(timer);
            ws.onopen = ws.onclose = ws.onerror = null;
            try {
                ws.close(1000);
            } catch {
                // closing already
            }
            if (this._probe !== ws) {
                return;
            }
            this._probe = null;
            if (opened && this.transport === t) {
                this.fallback = false;
                this.upgradeFailures = 0;
                this.failures = 0;
                this._drop('a WebSocket opens again', 0);
            } else {
                this._probeDelay = Math.min(this._probeDelay * 2,
                                            this.wsProbe * 8);
                this._scheduleProbe();
            }
        };
        const timer = setTimeout(() => done(false), PROBE_TIMEOUT);
        this._probe = ws;
        ws.onopen = () => done(true);
        ws.onclose = () => done(false);
    }

    _stopProbe() {
        clearTimeout(this._probeTimer);
        this._probeTimer = null;
        if (this._probe) {
            const ws = this._probe;
            this._probe = null;
            ws.onopen = ws.onclose = ws.onerror = null;
            try {
                ws.close(1000);
            } catch {
                // closing already
            }
        }
    }

    // Reconnects at once (the browser says it is online again, or the
    // person asked), resetting the backoff.
    reconnectNow() {
        this.failures = 0;
        if (!this.transport) {
            this.connect();
        }
    }

    // Gives up the current connection as if it had failed (then reconnects
    // with the backoff, or after `delay` ms).
    _drop(reason, delay) {
        const t = this.transport;
        if (!t) {
            return;
        }
        t.close();
        this._closed({ code: 1006, reason, opened: true, local: true, delay });
    }

    _closed(info) {
        const wasReady = this.ready;
        this.transport = null;
        this.ready = false;
        clearTimeout(this._ackTimer);
        this._ackTimer = null;
        this._acks.clear();
        clearInterval(this._pingTimer);
        clearTimeout(this._pongTimer);
        this._stopProbe();
        this._subscribed.clear();
        // presence is only known while connected: the watched users' state
        // comes again with the next subscribe
        const watched = [...this.presence.keys()];
        this.presence.clear();
        this._setStatus('offline');
        for (const user_id of watched) {
            this._emit('presence', { user_id });
        }
        if (info.code === 4001) {
            // revoked or unknown token: this device is gone
            this.logout();
            return;
        }
        if (this.stopped) {
            return;
        }
        let soon = false;
        if (!wasReady) {
            this.failures++;
            if (this.transportKind === 'http') {
                if (!info.opened && this.fallback) {
                    // HTTP fails as well: the network is down, not just
                    // closed to WebSockets; start over with a WebSocket
                    this.fallback = false;
                    this.upgradeFailures = 0;
                }
            } else {
                this.upgradeFailures = info.opened ? 0
                                                   : this.upgradeFailures + 1;
                // refused WebSockets: the fallback at once, not after the
                // backoff (a WebSocket retry on the fallback too)
                soon = !info.opened && !this.makeTransport
                    && (this.fallback
                        || this.upgradeFailures === FALLBACK_AFTER);
            }
        }
        // exponential backoff with "equal jitter": half fixed, half random
        const exp = Math.min(this.backoff.max,
                             this.backoff.base * 2 ** Math.min(this.failures, 16));
        const delay = info.delay !== undefined ? info.delay
            : wasReady || soon ? this.backoff.base * Math.random()
            : exp / 2 + Math.random() * exp / 2;
        this.nextRetry = Date.now() + delay;
        this._reconnectTimer = setTimeout(() => this.connect(), delay);
    }

    async _onServer(m) {
        switch (m.type) {
        case 'ready':
            this.ready = true;
            this.failures = 0;
            this.upgradeFailures = 0;
            if (this.transportKind === 'ws') {
                this.fallback = false;
            } else {
                this._scheduleProbe();
            }
            this._setStatus('syncing');
            this._flushOutbox();
            this._startPing();
            this.refreshChats().catch(() => {});
            break;
        case 'synced':
            this._setStatus('online');
            this._flushAcks();
            this._autoRead();
            break;
        case 'msg':
            await this._onMsg(m);
            break;
        case 'sent':
            await this._onSent(m);
            break;
        case 'receipt':
            await this._raiseMark(m.chat_id, m.user_id, m.status, m.seq);
            this._emit('messages', { chat_id: m.chat_id });
            this._emit('chats', {});
            break;
        case 'expired':
            await this._onExpired(m);
            break;
        case 'presence':
            this.presence.set(m.user_id, { online: m.online,
                                           last_seen: m.last_seen });
            this._emit('presence', { user_id: m.user_id });
            break;
        case 'pong':
            clearTimeout(this._pongTimer);
            break;
        case 'error':
            await this._onError(m);
            break;
        default:
            break;
        }
    }

    async _onMsg(m) {
        const held = this._msgMap(m.chat_id);
        if (!held.has(m.seq) && this._isResend(m)) {
            // The same message under a new seq: its sender resent it after
            // the server had already deleted the first copy (delivered to
            // every device), which PROTOCOL.md 5.4 allows ("for as long as
            // the message is stored"). Client ids are unique per device,
            // so (from_device, id) names the message: keep the first.
            this._ack(m.chat_id, m.seq);
            return;
        }
        if (!held.has(m.seq)) {
            const rec = { ...m };
            delete rec.type;
            await this.store.put('messages', rec);
            held.set(m.seq, rec);
            this._noteClientId(rec);
            const chat = this.chats.get(m.chat_id);
            if (!chat || m.kind === 'system') {
                // a chat made by someone else, or its members or title
                // changed: the list tells
                this.refreshChats().catch(() => {});
            }
            if (chat && m.seq > (chat.last_seq || 0)) {
                chat.last_seq = m.seq;
            }
            this._emit('messages', { chat_id: m.chat_id });
            this._emit('chats', {});
            if (m.chat_id === this.activeChat && this.visible
                && this.status === 'online') {
                this.markRead(m.chat_id);
            }
        }
        // stored (now or before): ack it, cumulatively
        this._ack(m.chat_id, m.seq);
    }

    async _onSent(m) {
        const e = this.outbox.get(m.id);
        if (!e) {
            return;         // a second answer to a resend
        }
        const rec = { chat_id: e.chat_id, seq: m.seq, ts: m.ts,
                      from: this.account.user_id,
                      from_device: this.account.device_id,
                      id: e.id, kind: 'text' };
        if (e.text) {
            rec.text = e.text;
        }
        if (e.media) {
            rec.media = e.media;
        }
        await this.store.put('messages', rec);
        await this.store.delete('outbox', e.id);
        this._msgMap(e.chat_id).set(m.seq, rec);
        this._noteClientId(rec);
        this.outbox.delete(e.id);
        this._emit('messages', { chat_id: e.chat_id });
        this._emit('chats', {});
    }

    async _onExpired(m) {
        const rec = { chat_id: m.chat_id, seq: m.from_seq, to_seq: m.to_seq,
                      kind: 'expired' };
        const held = this._msgMap(m.chat_id);
        if (!held.has(m.from_seq)) {
            await this.store.put('messages', rec);
            held.set(m.from_seq, rec);
            this._emit('messages', { chat_id: m.chat_id });
        }
        this._ack(m.chat_id, m.to_seq);
    }

    async _onError(m) {
        const e = m.id && this.outbox.get(m.id);
        if (e) {
            if (m.code === 'rate_limited' || m.code === 'unavailable') {
                setTimeout(() => this._sendEntry(e), RETRY_SEND);
                return;
            }
            e.failed = m.code;
            await this.store.put('outbox', e);
            this._emit('messages', { chat_id: e.chat_id });
        }
        this._emit('error', { code: m.code, message: m.message, id: m.id });
    }

    _ack(chatId, seq) {
        if (!this.ready) {
            return;         // the server sends it again next time
        }
        if ((this._acks.get(chatId) || 0) < seq) {
            this._acks.set(chatId, seq);
        }
        if (!this._ackTimer) {
            this._ackTimer = setTimeout(() => this._flushAcks(), ACK_DELAY);
        }
    }

    _flushAcks() {
        clearTimeout(this._ackTimer);
        this._ackTimer = null;
        if (!this.ready) {
            return;
        }
        for (const [chat_id, seq] of this._acks) {
            this.transport.send({ type: 'ack', chat_id, seq });
        }
        this._acks.clear();
    }

    _startPing() {
        clearInterval(this._pingTimer);
        this._pingTimer = setInterval(() => {
            if (!this.ready) {
                return;
            }
            this.transport.send({ type: 'ping', t: Date.now() });
            clearTimeout(this._pongTimer);
            this._pongTimer = setTimeout(() => this._drop('no pong'),
                                         PING_TIMEOUT);
        }, PING_EVERY);
    }

    // Watches the users of the device's chats (direct chats' peers first,
    // at most 1024 a socket).
    _subscribePresence() {
        if (!this.ready || !this.account) {
            return;
        }
        const me = this.account.user_id;
        const want = [];
        const chats = [...this.chats.values()]
            .sort((a, b) => (a.type === 'direct' ? 0 : 1)
                            - (b.type === 'direct' ? 0 : 1));
        for (const c of chats) {
            for (const m of c.members || []) {
                if (m.user_id !== me && !this._subscribed.has(m.user_id)
                    && this._subscribed.size + want.length < 1024
                    && !want.includes(m.user_id)) {
                    want.push(m.user_id);
                }
            }
        }
        for (let i = 0; i < want.length; i += 256) {
            const ids = want.slice(i, i + 256);
            ids.forEach(u => this._subscribed.add(u));
            this.transport.send({ type: 'presence', subscribe: ids });
        }
    }

    // ------------------------------------------------------------------
    // Helpers

    async _raiseMark(chatId, userId, status, seq) {
        const mk = { ...this.mark(chatId, userId) };
        const key = status === 'read' ? 'read' : 'delivered';
        if (seq <= mk[key]) {
            return;
        }
        mk[key] = seq;
        if (key === 'read' && mk.delivered < seq) {
            mk.delivered = seq;
        }
        this._markMap(chatId).set(userId, mk);
        await this.store.put('marks', mk);
    }

    _clientKey(m) {
        return m.id && m.from_device ? `${m.chat_id}/${m.from_device}/${m.id}`
                                     : null;
    }

    _noteClientId(m) {
        const k = this._clientKey(m);
        if (k) {
            this.clientIds.add(k);
        }
    }

    _isResend(m) {
        const k = this._clientKey(m);
        return k !== null && this.clientIds.has(k);
    }

    _msgMap(chatId) {
        let m = this.msgs.get(chatId);
        if (!m) {
            m = new Map();
            this.msgs.set(chatId, m);
        }
        return m;
    }

    _markMap(chatId) {
        let m = this.marks.get(chatId);
        if (!m) {
            m = new Map();
            this.marks.set(chatId, m);
        }
        return m;
    }

    _setStatus(s, always = false) {
        if (this.status !== s || always) {
            this.status = s;
            this._emit('status', { status: s, transport: this.transportKind });
        }
    }

    _emit(type, detail) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
    }
}

export function wsUrl(base) {
    const u = new URL('/v1/ws', base || globalThis.location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
}

// XMLHttpRequest, not fetch: fetch reports no upload progress.
function putWithProgress(url, method, headers, blob, onProgress) {
    return new Promise((resolve, reject) => {
        const x = new XMLHttpRequest();
        x.open(method, url);
        for (const [k, v] of Object.entries(headers)) {
            x.setRequestHeader(k, v);
        }
        x.upload.onprogress = e => {
            if (onProgress && e.lengthComputable) {
                onProgress(e.loaded / e.total);
            }
        };
        x.onload = () => {
            if (x.status >= 200 && x.status < 300) {
                if (onProgress) {
                    onProgress(1);
                }
                resolve();
            } else {
                reject(new ApiError(x.status, 'upload_failed',
                                    `upload refused: HTTP ${x.status}`));
            }
        };
        x.onerror = () => reject(new ApiError(0, 'network', 'upload failed'));
        x.send(blob);
    });
}
