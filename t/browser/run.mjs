// The browser scenarios of t/browser.t: node t/browser/run.mjs <base-url>
// <screenshot-dir> [<fallback-base-url>]. Prints "RESULT {"name","ok","error"}" per scenario,
// notes otherwise, and "DONE" at the end. Every wait is bounded; the
// scenarios build on each other (the same people go through all of them).
//
// People and devices (fresh browser contexts: empty profiles):
//   alice  her page goes through a TCP proxy in this process, so the test
//          can cut her network for real (see Proxy)
//   bob    on nginx directly
//   bob2   a second device of Bob, linked with a link code
//   carol  signed up through the API only, to be added to a group
//   dave   his page comes from <fallback-base-url>, the same nginx on a
//          port whose /v1/ws answers 403 (a network that refuses
//          WebSockets): his client falls back to HTTP long-polls
//   erin   on nginx directly (WebSocket), chats with Dave
//
// Console errors and page errors are kept per person (`consoleErrors`);
// the fallback scenarios require none but Dave's refused upgrades.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../node/package.json'));
const { chromium } = require('playwright-core');

const BASE = process.argv[2] || 'http://127.0.0.1:8080';
const SHOTS = process.argv[3] || path.join(here, 'screenshots');
const FALLBACK_BASE = process.argv[4] || null;
const WAIT = 15000;                 // the bound of one wait
const RUN_BOUND = 160000;           // the whole run (t/browser.t kills at 180 s)
const started = Date.now();

fs.mkdirSync(SHOTS, { recursive: true });

// this run's screenshots only: an earlier run's FAILED-* would mislead
for (const f of fs.readdirSync(SHOTS)) {
    if (/^([0-9]+[a-z]?-|FAILED-).*\.png$/.test(f)) {
        fs.unlinkSync(path.join(SHOTS, f));
    }
}

function note(s) {
    console.log(`# ${s}`);
}

let reported = 0;

function result(name, ok, error) {
    reported++;
    console.log(`RESULT ${JSON.stringify({ name, ok, error })}`);
}

function randomMobile() {
    return '+1555' + String(Math.floor(Math.random() * 1e7)).padStart(7, '0');
}

// ----------------------------------------------------------------------
// A TCP proxy in front of nginx for Alice's page. Chromium keeps an open
// WebSocket across context.setOffline(true), so that cannot take a
// person offline; closing the socket from the page would test only the
// page's own close path. The proxy breaks the real connections:
//   freeze()   server-to-browser bytes are dropped (the browser's sends
//              still reach the server): a `send` is stored but its `sent`
//              is lost, as on a network that dies mid-request
//   cut()      every connection is reset and new ones are refused
//              (reset at once), as with no network at all
//   noUpgrade() new connections whose first request asks for a WebSocket
//              upgrade are answered 403 (plain HTTP still goes through),
//              as behind a proxy that refuses WebSockets; existing
//              connections are not touched
//   dropAll()  every connection is reset (new ones go through)
//   restore()  back to normal
class Proxy {
    constructor(target) {
        this.target = new URL(target);
        this.mode = 'up';
        this.refuseUpgrades = false;
        this.refused = 0;
        this.pairs = new Set();
    }

    listen() {
        this.server = net.createServer(c => this._accept(c));
        return new Promise(resolve => {
            this.server.listen(0, '127.0.0.1', () => {
                this.port = this.server.address().port;
                resolve(`http://127.0.0.1:${this.port}`);
            });
        });
    }

    _accept(c) {
        if (this.mode === 'cut') {
            c.resetAndDestroy();
            return;
        }
        if (this.refuseUpgrades) {
            // look at the first request's head before choosing
            let head = Buffer.alloc(0);
            const onData = d => {
                head = Buffer.concat([head, d]);
                const end = head.indexOf('\r\n\r\n');
                if (end < 0 && head.length < 16384) {
                    return;
                }
                c.off('data', onData);
                c.pause();
                if (/^upgrade:\s*websocket/im.test(head.toString('latin1', 0, end < 0 ? head.length : end))) {
                    this.refused++;
                    c.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n'
                          + 'Content-Length: 10\r\nConnection: close\r\n\r\nno sockets');
                    return;
                }
                this._pipe(c, head);
                c.resume();
            };
            c.on('data', onData);
            c.on('error', () => c.destroy());
            return;
        }
        this._pipe(c, null);
    }

    _pipe(c, first) {
        const s = net.connect(Number(this.target.port), this.target.hostname);
        if (first) {
            s.write(first);
        }
        const pair = { c, s };
        this.pairs.add(pair);
        c.on('data', d => s.write(d));
        s.on('data', d => {
            if (this.mode === 'up') {
                c.write(d);
            }
        });
        const end = () => {
            this.pairs.delete(pair);
            c.destroy();
            s.destroy();
        };
        c.on('close', end);
        s.on('close', end);
        c.on('error', end);
        s.on('error', end);
    }

    freeze() {
        this.mode = 'frozen';
    }

    cut() {
        this.mode = 'cut';
        this.dropAll();
    }

    // every connection is reset (new ones are not refused)
    dropAll() {
        for (const { c, s } of this.pairs) {
            c.resetAndDestroy();
            s.destroy();
        }
        this.pairs.clear();
    }

    noUpgrade() {
        this.refuseUpgrades = true;
    }

    restore() {
        this.mode = 'up';
        this.refuseUpgrades = false;
    }

    close() {
        this.cut();
        this.server.close();
    }
}

// ----------------------------------------------------------------------
// Helpers

async function waitFor(page, fn, arg, what) {
    try {
        return await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 100 });
    } catch (e) {
        throw new Error(`timed out waiting for ${what}`);
    }
}

function assert(cond, msg) {
    if (!cond) {
        throw new Error(msg);
    }
}

async function shot(page, name) {
    const file = path.join(SHOTS, `${name}.png`);
    await page.screenshot({ path: file, timeout: WAIT });
    note(`screenshot ${file}`);
}

// What a person sees of the open chat: [{dir, kind, text, tick, seq}]
function visibleMessages(page) {
    return page.$$eval('[data-testid="messages"] [data-testid="message"]', lis =>
        lis.map(li => ({
            dir: li.dataset.dir,
            kind: li.dataset.kind,
            seq: li.dataset.seq,
            text: (li.querySelector('[data-testid="msg-text"]') || {}).textContent || '',
            tick: (li.querySelector('[data-testid="tick"]') || { dataset: {} }).dataset.state,
        })));
}

// The tick of the last own message with this text
function tickOf(page, text) {
    return waitFor(page, t => {
        const lis = [...document.querySelectorAll('[data-testid="message"][data-dir="out"]')]
            .filter(li => (li.querySelector('[data-testid="msg-text"]') || {}).textContent === t);
        return lis.length ? lis[lis.length - 1].querySelector('[data-testid="tick"]').dataset.state
                          : false;
    }, text, `own message "${text}"`).then(h => h.jsonValue());
}

function waitTick(page, text, state) {
    return waitFor(page, ([t, s]) => {
        const lis = [...document.querySelectorAll('[data-testid="message"][data-dir="out"]')]
            .filter(li => (li.querySelector('[data-testid="msg-text"]') || {}).textContent === t);
        return lis.length === 1
            && lis[0].querySelector('[data-testid="tick"]').dataset.state === s;
    }, [text, state], `"${text}" to show the ${state} tick`);
}

function waitText(page, text, dir = 'in') {
    return waitFor(page, ([t, d]) =>
        [...document.querySelectorAll(`[data-testid="message"][data-dir="${d}"] [data-testid="msg-text"]`)]
            .some(e => e.textContent === t),
        [text, dir], `message "${text}"`);
}

function chatItem(page, title) {
    return page.locator('[data-testid="chat-item"]', {
        has: page.locator('[data-testid="chat-name"]', { hasText: title }),
    });
}

async function unreadOf(page, title) {
    const badge = chatItem(page, title).locator('[data-testid="unread-badge"]');
    return (await badge.count()) ? Number(await badge.textContent()) : 0;
}

async function waitUnread(page, title, n) {
    const deadline = Date.now() + WAIT;
    let last;
    while (Date.now() < deadline) {
        last = await unreadOf(page, title);
        if (last === n) {
            return;
        }
        await page.waitForTimeout(100);
    }
    throw new Error(`unread count of "${title}" is ${last}, not ${n}`);
}

function waitOnline(page) {
    return waitFor(page, () =>
        document.querySelector('[data-testid="conn-status"]').dataset.state === 'online',
        null, 'the connection to be online');
}

async function send(page, text) {
    await page.fill('[data-testid="composer-input"]', text);
    await page.click('[data-testid="send"]');
}

async function openChat(page, title) {
    const item = chatItem(page, title).first();
    const name = await item.locator('[data-testid="chat-name"]').textContent({ timeout: WAIT });
    await item.click({ timeout: WAIT });
    await waitFor(page, t =>
        document.querySelector('[data-testid="chat-title"]').textContent === t
        && !document.querySelector('[data-testid="chat"]').hidden,
        name, `chat "${name}" to open`);
}

async function closeChat(page) {
    await page.click('#back');
}

async function api(method, p, body, token) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) {
        headers.Authorization = `Bearer ${token}`;
    }
    const r = await fetch(BASE + p, { method, headers,
                                      body: body && JSON.stringify(body) });
    const j = await r.json().catch(() => null);
    if (!r.ok) {
        throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(j)}`);
    }
    return j;
}

// A PNG of w x h noise (so that it does not compress: the upload takes a
// moment and the progress bar has something to show).
function png(w, h) {
    const crcTable = [];
    for (let n = 0; n < 256; n++) {
        let c = n;
        for (let k = 0; k < 8; k++) {
            c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        }
        crcTable[n] = c >>> 0;
    }
    const crc = buf => {
        let c = 0xffffffff;
        for (const b of buf) {
            c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
        }
        return (c ^ 0xffffffff) >>> 0;
    };
    const chunk = (type, data) => {
        const len = Buffer.alloc(4);
        len.writeUInt32BE(data.length);
        const td = Buffer.concat([Buffer.from(type), data]);
        const c = Buffer.alloc(4);
        c.writeUInt32BE(crc(td));
        return Buffer.concat([len, td, c]);
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(w, 0);
    ihdr.writeUInt32BE(h, 4);
    ihdr[8] = 8;        // bit depth
    ihdr[9] = 2;        // RGB
    const raw = Buffer.alloc((w * 3 + 1) * h);
    let seed = 12345;
    for (let y = 0; y < h; y++) {
        const row = y * (w * 3 + 1);
        raw[row] = 0;
        for (let x = 0; x < w * 3; x++) {
            seed = (seed * 1103515245 + 12345) & 0x7fffffff;
            raw[row + 1 + x] = (x % 3 === 0 ? y : seed >> 16) & 0xff;
        }
    }
    return Buffer.concat([
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        chunk('IHDR', ihdr),
        chunk('IDAT', zlib.deflateSync(raw)),
        chunk('IEND', Buffer.alloc(0)),
    ]);
}

// ----------------------------------------------------------------------
// The run

const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run',
           '--disable-quic'],
    timeout: 30000,
});
note(`chromium ${browser.version()}, playwright-core, base ${BASE}`);
const proxy = new Proxy(BASE);
const ALICE_BASE = await proxy.listen();
note(`alice's page goes through the proxy ${ALICE_BASE}`);

const killer = setTimeout(() => {
    result('the run ended within its bound', false, `still running after ${RUN_BOUND} ms`);
    console.log('DONE');
    process.exit(1);
}, RUN_BOUND);

const P = {};                       // pages
const C = {};                       // contexts
const M = { alice: randomMobile(), bob: randomMobile(), carol: randomMobile() };
let failedSetup = null;

const consoleErrors = {};           // name -> ["console: ...", "page error: ..."]

function watchPage(name, page) {
    consoleErrors[name] ||= [];
    page.on('pageerror', e => {
        consoleErrors[name].push(`page error: ${e.message}`);
        note(`${name} page error: ${e.message}`);
    });
    page.on('console', m => {
        if (m.type() === 'error') {
            consoleErrors[name].push(`console: ${m.text()}`);
            note(`${name} console: ${m.text()}`);
        }
    });
}

async function newPerson(name, base) {
    C[name] = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    P[name] = await C[name].newPage();
    watchPage(name, P[name]);
    await P[name].goto(base + '/', { timeout: WAIT });
    await waitFor(P[name], () => document.body.dataset.ready === '1', null,
                  'the page to start');
}

async function scenario(name, fn, { setup = false } = {}) {
    if (failedSetup) {
        result(name, false, `not run: "${failedSetup}" failed`);
        return;
    }
    const t0 = Date.now();
    try {
        await fn();
        result(name, true);
        note(`${name}: ${Date.now() - t0} ms`);
    } catch (e) {
        result(name, false, e.stack || String(e));
        for (const [who, page] of Object.entries(P)) {
            if (!page.isClosed()) {
                await shot(page, `FAILED-${name.replace(/\W+/g, '-')}-${who}`).catch(() => {});
            }
        }
        if (setup) {
            failedSetup = name;
        }
    }
}

async function signup(name, deviceName) {
    const page = P[name];
    await page.fill('[data-testid="phone-input"]', M[name]);
    await page.click('[data-testid="send-code"]');
    await waitFor(page, () => !document.querySelector('[data-testid="dev-code"]').hidden,
                  null, 'the development code');
    const shown = await page.textContent('[data-testid="dev-code"]');
    const code = await page.inputValue('[data-testid="code-input"]');
    assert(/^\d{6}$/.test(code), `the code field holds "${code}"`);
    assert(shown.includes(code), `the note "${shown}" shows the code ${code}`);
    if (name === 'alice') {
        await shot(page, '01-signup-dev-code');
    }
    await page.fill('[data-testid="device-name-input"]', deviceName);
    await page.click('[data-testid="verify"]');
    await waitFor(page, () => !document.querySelector('[data-testid="app"]').hidden,
                  null, 'the chat screen after verify');
    await waitOnline(page);
    const me = await page.textContent('[data-testid="me"]');
    assert(me === M[name], `the header shows ${me}, not ${M[name]}`);
}

await scenario('sign up with a phone number and the code shown in local mode', async () => {
    await newPerson('alice', ALICE_BASE);
    await newPerson('bob', BASE);
    await signup('alice', 'Alice laptop');
    await signup('bob', 'Bob phone');
    // Carol is only needed as a group member: the API will do
    const r = await api('POST', '/v1/register', { mobile: M.carol });
    const v = await api('POST', '/v1/verify', { mobile: M.carol, code: r.dev_code,
                                                device_name: 'carol' });
    M.carolId = v.user_id;
}, { setup: true });

await scenario('a direct chat: the message arrives, ticks go sent -> delivered -> read', async () => {
    const { alice, bob } = P;
    await alice.click('[data-testid="new-chat"]');
    await alice.fill('[data-testid="new-chat-phone"]', M.bob);
    await alice.click('[data-testid="new-chat-submit"]');
    await waitFor(alice, t => document.querySelector('[data-testid="chat-title"]').textContent === t,
                  M.bob, 'the chat with Bob to open');
    await send(alice, 'hello bob');
    // Bob is on his chat list, not in the chat: delivered, not read
    await waitUnread(bob, 'User', 1);
    await waitTick(alice, 'hello bob', 'delivered');
    await shot(alice, '02-alice-two-grey-ticks');
    await shot(bob, '03-bob-unread-badge');
    await alice.waitForTimeout(500);
    assert(await tickOf(alice, 'hello bob') === 'delivered',
           'still two grey ticks while Bob has not opened the chat');
    await openChat(bob, 'User');
    await waitText(bob, 'hello bob');
    await waitTick(alice, 'hello bob', 'read');
    await waitUnread(bob, 'User', 0);
    await send(bob, 'hi alice');
    await waitText(alice, 'hi alice');
    await waitTick(bob, 'hi alice', 'read');     // Alice has the chat open
    const seen = await visibleMessages(alice);
    assert(JSON.stringify(seen.map(m => [m.dir, m.text])) ===
           JSON.stringify([['out', 'hello bob'], ['in', 'hi alice']]),
           `Alice's chat shows ${JSON.stringify(seen)}`);
    await shot(alice, '04-alice-blue-ticks');
});

await scenario('presence: online while the other is connected', async () => {
    await waitFor(P.alice, () =>
        document.querySelector('[data-testid="presence"]').textContent === 'online',
        null, 'Alice to see Bob online');
    await waitFor(P.bob, () =>
        document.querySelector('[data-testid="presence"]').textContent === 'online',
        null, 'Bob to see Alice online');
});

await scenario('a second device linked with a link code; reading on one clears the unread count on the other', async () => {
    const { alice, bob } = P;
    await bob.click('[data-testid="link-device"]');
    await waitFor(bob, () => /^[A-Z0-9]{10}$/.test(
        document.querySelector('[data-testid="link-code"]').textContent),
        null, 'a link code');
    const code = await bob.textContent('[data-testid="link-code"]');
    await shot(bob, '05-bob-link-code');
    await newPerson('bob2', BASE);
    const bob2 = P.bob2;
    await bob2.click('[data-testid="link-toggle"]');
    await bob2.fill('[data-testid="link-code-input"]', code);
    await bob2.fill('[data-testid="link-device-name-input"]', 'Bob tablet');
    await bob2.click('[data-testid="link-submit"]');
    await waitFor(bob2, () => !document.querySelector('[data-testid="app"]').hidden,
                  null, 'the chat screen after linking');
    await waitOnline(bob2);
    assert(await bob2.textContent('[data-testid="me"]') === M.bob,
           'the linked device shows Bob\'s number');
    await waitFor(bob2, () => document.querySelectorAll('[data-testid="chat-item"]').length === 1,
                  null, 'Bob\'s chat on the new device');

    await closeChat(bob);
    await send(alice, 'for both of your devices');
    await waitUnread(bob, 'User', 1);
    await waitUnread(bob2, 'User', 1);
    await waitTick(alice, 'for both of your devices', 'delivered');
    await shot(bob2, '06-bob2-unread-before');
    await openChat(bob, 'User');
    await waitText(bob, 'for both of your devices');
    await waitUnread(bob2, 'User', 0);
    await waitTick(alice, 'for both of your devices', 'read');
    await shot(bob2, '07-bob2-unread-cleared');
    await openChat(bob2, 'User');
    await waitText(bob2, 'for both of your devices');
    const seen = (await visibleMessages(bob2)).filter(m => m.kind === 'text');
    assert(seen.length === 1, `the new device holds only what came after its link: ${JSON.stringify(seen)}`);
    // what Bob sends from one device shows as his on the other
    await send(bob2, 'from my tablet');
    await waitText(alice, 'from my tablet');
    await waitText(bob, 'from my tablet', 'out');
});

await scenario('a group: create, rename, add and remove a member, as system messages in order', async () => {
    const { alice, bob } = P;
    await alice.click('[data-testid="new-group"]');
    await alice.fill('[data-testid="group-title"]', 'Trip');
    await alice.fill('[data-testid="group-phones"]', M.bob);
    await alice.click('[data-testid="new-group-submit"]');
    await waitFor(alice, () => document.querySelector('[data-testid="chat-title"]').textContent === 'Trip',
                  null, 'the group to open');
    await alice.click('[data-testid="group-info"]');
    await alice.fill('[data-testid="rename-input"]', 'Trip 2026');
    await alice.click('[data-testid="rename-submit"]');
    await alice.fill('[data-testid="add-member-phone"]', M.carol);
    await alice.click('[data-testid="add-member-submit"]');
    await waitFor(alice, id => !!document.querySelector(`[data-testid="member"][data-user-id="${id}"]`),
                  M.carolId, 'Carol in the member list');
    await alice.click(`[data-testid="member"][data-user-id="${M.carolId}"] [data-testid="remove-member"]`);
    await waitFor(alice, id => !document.querySelector(`[data-testid="member"][data-user-id="${id}"]`),
                  M.carolId, 'Carol gone from the member list');
    await send(alice, 'who is in?');

    await openChat(bob, 'Trip 2026');
    await waitText(bob, 'who is in?');
    const sys = (await visibleMessages(bob)).map(m => m.kind === 'system' ? m.text : `text:${m.text}`);
    const want = [
        'User .* created the group “Trip”',
        'User .* renamed the group to “Trip 2026”',
        `User .* added ${M.carol.replace('+', '\\+')}|User .* added User ${M.carolId}`,
        `User .* removed (${M.carol.replace('+', '\\+')}|User ${M.carolId})`,
        'text:who is in\\?',
    ];
    assert(sys.length === want.length && want.every((w, i) => new RegExp(`^(${w})$`).test(sys[i])),
           `Bob's group shows ${JSON.stringify(sys)}`);
    const aliceSys = (await visibleMessages(alice)).filter(m => m.kind === 'system').map(m => m.text);
    assert(aliceSys.length === 4 && aliceSys[0] === 'You created the group “Trip”'
           && aliceSys[3] === `You removed ${M.carol}`,
           `Alice's group shows ${JSON.stringify(aliceSys)}`);
    await waitTick(alice, 'who is in?', 'read');
    await shot(bob, '08-bob-group-system-messages');
    await closeChat(bob);
    await openChat(alice, M.bob);
});

await scenario('an image: uploaded with a progress bar, shown inline on the other side', async () => {
    const { alice, bob } = P;
    await openChat(bob, 'User');
    // watch the progress bar while the upload runs
    await alice.evaluate(() => {
        const u = document.querySelector('[data-testid="upload"]');
        const bar = document.querySelector('[data-testid="upload-progress"]');
        window.__upload = { shown: false, values: [] };
        window.__uploadObserver = new MutationObserver(() => {
            if (!u.hidden) {
                window.__upload.shown = true;
            }
            const v = Number(bar.getAttribute('value'));
            if (window.__upload.values[window.__upload.values.length - 1] !== v) {
                window.__upload.values.push(v);
            }
        });
        window.__uploadObserver.observe(u, { attributes: true, subtree: true });
    });
    await alice.setInputFiles('[data-testid="attach-input"]', {
        name: 'noise.png', mimeType: 'image/png', buffer: png(320, 240),
    });
    await waitFor(alice, () => {
        const img = document.querySelector('[data-testid="message"][data-dir="out"] [data-testid="msg-image"]');
        return img && img.complete && img.naturalWidth > 0;
    }, null, 'Alice\'s own image');
    const up = await alice.evaluate(() => {
        window.__uploadObserver.disconnect();
        return window.__upload;
    });
    assert(up.shown && up.values[up.values.length - 1] === 1,
           `the progress bar showed while uploading and reached the end: ${JSON.stringify(up)}`);
    const w = await waitFor(bob, () => {
        const img = document.querySelector('[data-testid="message"][data-dir="in"] [data-testid="msg-image"]');
        return img && img.complete && img.naturalWidth > 0 && [img.naturalWidth, img.naturalHeight];
    }, null, 'the image rendered for Bob').then(h => h.jsonValue());
    assert(w[0] === 320 && w[1] === 240, `Bob's image is ${w}`);
    await waitFor(alice, () => {
        const li = [...document.querySelectorAll('[data-testid="message"][data-dir="out"]')]
            .find(l => l.querySelector('[data-testid="msg-image"]'));
        return li && li.querySelector('[data-testid="tick"]').dataset.state === 'read';
    }, null, 'the image\'s tick to turn blue');
    await shot(bob, '09-bob-image');
});

await scenario('offline: a send whose answer was lost and sends typed while cut off arrive once each, in order', async () => {
    const { alice, bob } = P;
    // 1. the network dies mid-send: the server stores it, Alice never
    //    hears back
    proxy.freeze();
    await send(alice, 'lost answer');
    await waitText(bob, 'lost answer');
    assert(await tickOf(alice, 'lost answer') === 'clock',
           'no `sent` reached Alice: her message still has the clock');
    // 2. no network at all
    proxy.cut();
    await waitFor(alice, () =>
        document.querySelector('[data-testid="conn-status"]').dataset.state === 'offline',
        null, 'Alice to notice she is offline');
    assert(await alice.textContent('[data-testid="presence"]') !== 'online',
           'offline, Alice is not shown a stale "online" for Bob');
    await send(alice, 'typed offline 1');
    await send(alice, 'typed offline 2');
    for (const t of ['lost answer', 'typed offline 1', 'typed offline 2']) {
        assert(await tickOf(alice, t) === 'clock', `"${t}" waits with a clock`);
    }
    // Bob sees her go: after the 1 s debounce, "last seen"
    await waitFor(bob, () => /^last seen /.test(
        document.querySelector('[data-testid="presence"]').textContent),
        null, 'Bob to see Alice "last seen"');
    await send(bob, 'are you there?');
    await waitTick(bob, 'are you there?', 'sent');
    await shot(alice, '10-alice-offline-clocks');
    await shot(bob, '11-bob-sees-last-seen');
    // 3. the network comes back: the client reconnects by itself (backoff)
    await alice.waitForTimeout(1500);
    proxy.restore();
    await alice.waitForFunction(() =>
        document.querySelector('[data-testid="conn-status"]').dataset.state === 'online',
        null, { timeout: 30000, polling: 100 });
    // after three refused connects the client tries the HTTP fallback: it
    // may come back on either, and sends must keep their order on both
    note(`Alice is back over ${await alice.evaluate(() => window.chat.transportKind)}`);
    for (const t of ['lost answer', 'typed offline 1', 'typed offline 2']) {
        await waitTick(alice, t, 'read');
    }
    await waitText(alice, 'are you there?');
    await waitText(bob, 'typed offline 2');
    await waitFor(bob, () => document.querySelector('[data-testid="presence"]').textContent === 'online',
                  null, 'Bob to see Alice online again');
    await bob.waitForTimeout(1000);         // a duplicate would have come by now
    const texts = (await visibleMessages(bob)).filter(m => m.dir === 'in').map(m => m.text);
    const tail = texts.slice(-3);
    assert(JSON.stringify(tail) === JSON.stringify(['lost answer', 'typed offline 1', 'typed offline 2']),
           `Bob's last three from Alice: ${JSON.stringify(texts)}`);
    for (const t of tail) {
        assert(texts.filter(x => x === t).length === 1, `"${t}" shows once for Bob`);
    }
    const mine = (await visibleMessages(alice)).filter(m => m.dir === 'out').map(m => m.text);
    for (const t of tail) {
        assert(mine.filter(x => x === t).length === 1, `"${t}" shows once for Alice`);
    }
    const bobSeq = (await visibleMessages(bob)).find(m => m.text === 'lost answer').seq;
    const aliceSeq = (await visibleMessages(alice)).find(m => m.text === 'lost answer').seq;
    if (bobSeq !== aliceSeq) {
        note(`the resend of "lost answer" (same client id) was stored anew: seq ${aliceSeq} `
             + `for Alice, ${bobSeq} first delivered to Bob (the first copy was delivered `
             + 'to all and deleted; Bob\'s client dropped the copy by (from_device, id))');
    }
    const seqs = (await visibleMessages(bob)).map(m => Number(m.seq));
    assert(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `Bob's chat in seq order: ${seqs}`);
    const got = (await visibleMessages(alice)).filter(m => m.text === 'are you there?');
    assert(got.length === 1, 'what Bob sent meanwhile shows once for Alice');
    await shot(alice, '12-alice-back-online');
});

await scenario('history survives a reload (IndexedDB), after the server deleted what was delivered', async () => {
    for (const who of ['alice', 'bob']) {
        const page = P[who];
        const title = who === 'alice' ? M.bob : 'User';
        const before = await visibleMessages(page);
        await page.reload({ timeout: WAIT });
        await waitFor(page, () => document.body.dataset.ready === '1', null, 'the page to start');
        await waitOnline(page);
        await openChat(page, title);
        await waitFor(page, n => document.querySelectorAll('[data-testid="messages"] [data-testid="message"]').length >= n,
                      before.length, 'the history');
        const after = await visibleMessages(page);
        const key = ms => JSON.stringify(ms.map(m => [m.dir, m.text, m.seq, m.tick]));
        assert(key(after) === key(before),
               `${who}'s chat after reload: ${key(after)}, before: ${key(before)}`);
    }
    await shot(P.bob, '13-bob-after-reload');
});

await scenario('presence: "last seen" once every device of the other has gone', async () => {
    const { alice } = P;
    await C.bob2.close();
    await alice.waitForTimeout(2000);       // past the debounce: Bob still has a device
    assert(await alice.textContent('[data-testid="presence"]') === 'online',
           'Bob is online while one of his devices is');
    await C.bob.close();
    // "last seen today at 01:12" ("last seen 3 Dec at ..." past midnight)
    await waitFor(alice, () => /^last seen (today|\d+ \w+) at /.test(
        document.querySelector('[data-testid="presence"]').textContent),
        null, 'Alice to see Bob "last seen today at ..."');
    await shot(alice, '14-alice-sees-last-seen');
});

// ----------------------------------------------------------------------
// The HTTP fallback: Dave's network refuses WebSockets

// Dave's console holds the refused upgrades (Chromium reports each failed
// WebSocket handshake) and nothing else; the others' hold nothing.
const REFUSED_UPGRADE = /^console: WebSocket connection to 'ws:\/\/[^']*\/v1\/ws' failed: Error during WebSocket handshake: Unexpected response code: 403$/;

function consoleTrouble(name) {
    return (consoleErrors[name] || []).filter(e => !(name === 'dave' && REFUSED_UPGRADE.test(e)));
}

function presenceText(page) {
    return page.textContent('[data-testid="presence"]', { timeout: WAIT });
}

// Dave's page, opened anew in his browser profile, with the events of
// its client recorded from the start (window.__statuses).
async function openFallbackPage() {
    P.dave = await C.dave.newPage();
    watchPage('dave', P.dave);
    await P.dave.addInitScript(() => {
        // app.js sets window.chat before it starts the client
        window.__statuses = [];
        const t0 = Date.now();
        let client = null;
        Object.defineProperty(window, 'chat', {
            configurable: true,
            get: () => client,
            set: c => {
                client = c;
                c.addEventListener('status', e =>
                    window.__statuses.push({ ...e.detail, at: Date.now() - t0 }));
            },
        });
    });
    P.dave.__sockets = [];
    P.dave.on('websocket', ws => P.dave.__sockets.push(ws.url()));
    await P.dave.goto(FALLBACK_BASE + '/', { timeout: WAIT });
    await waitFor(P.dave, () => document.body.dataset.ready === '1', null, 'the page to start');
}

async function waitFallback(page) {
    await waitFor(page, () =>
        document.querySelector('[data-testid="conn-status"]').dataset.state === 'online'
        && window.chat.transportKind === 'http'
        && !document.querySelector('[data-testid="conn-transport"]').hidden,
        null, 'the connection to be online over the HTTP fallback');
    assert(await page.textContent('[data-testid="conn-transport"]') === '(HTTP fallback)',
           'the header says "(HTTP fallback)"');
}

// What the client went through on its way to the fallback: WebSockets
// first, refused, then HTTP.
async function checkFallbackPath(page) {
    const statuses = await page.evaluate(() => window.__statuses);
    const tries = statuses.filter(s => s.status === 'connecting').map(s => s.transport);
    assert(JSON.stringify(tries) === JSON.stringify(['ws', 'ws', 'ws', 'http']),
           `three WebSocket connects, then HTTP: ${JSON.stringify(statuses)}`);
    const online = statuses.filter(s => s.status === 'online');
    assert(online.length === 1 && online[0].transport === 'http',
           `online once, over http: ${JSON.stringify(statuses)}`);
    assert(page.__sockets.length === 3
           && page.__sockets.every(u => u === FALLBACK_BASE.replace(/^http/, 'ws') + '/v1/ws'),
           `the page tried three WebSockets: ${JSON.stringify(page.__sockets)}`);
    note(`fallback: online over HTTP ${online[0].at} ms after the page started`);
}

if (FALLBACK_BASE) {
    await scenario('HTTP fallback: WebSockets refused, the client falls back to HTTP and says so', async () => {
        M.dave = randomMobile();
        M.erin = randomMobile();
        C.dave = await browser.newContext({ viewport: { width: 1000, height: 700 } });
        await openFallbackPage();
        await newPerson('erin', BASE);
        await P.dave.fill('[data-testid="phone-input"]', M.dave);
        await P.dave.click('[data-testid="send-code"]');
        await waitFor(P.dave, () => !document.querySelector('[data-testid="dev-code"]').hidden,
                      null, 'the development code');
        await P.dave.fill('[data-testid="device-name-input"]', 'Dave at the airport');
        await P.dave.click('[data-testid="verify"]');
        await waitFallback(P.dave);
        await checkFallbackPath(P.dave);
        await signup('erin', 'Erin desktop');
        assert(await P.erin.evaluate(() => window.chat.transportKind) === 'ws',
               'Erin is on a WebSocket');
        assert(await P.erin.isHidden('[data-testid="conn-transport"]'),
               'Erin\'s header says nothing of a fallback');
        await shot(P.dave, '15-dave-http-fallback');
    }, { setup: true });

    await scenario('HTTP fallback: messages both ways, ticks turn blue both ways, presence online', async () => {
        const { dave, erin } = P;
        await erin.click('[data-testid="new-chat"]');
        await erin.fill('[data-testid="new-chat-phone"]', M.dave);
        await erin.click('[data-testid="new-chat-submit"]');
        await waitFor(erin, t => document.querySelector('[data-testid="chat-title"]').textContent === t,
                      M.dave, 'the chat with Dave to open');
        await send(erin, 'can you hear me, dave?');
        // Dave's poll brought it and acked it: two grey ticks, not blue
        await waitUnread(dave, 'User', 1);
        await waitTick(erin, 'can you hear me, dave?', 'delivered');
        await erin.waitForTimeout(500);
        assert(await tickOf(erin, 'can you hear me, dave?') === 'delivered',
               'still two grey ticks while Dave has not opened the chat');
        await openChat(dave, 'User');
        await waitText(dave, 'can you hear me, dave?');
        // Dave's POST /v1/read
        await waitTick(erin, 'can you hear me, dave?', 'read');
        await waitUnread(dave, 'User', 0);
        // Dave's POST /v1/send, then the receipts come to him over his polls
        await send(dave, 'loud and clear, over http');
        await waitText(erin, 'loud and clear, over http');
        await waitTick(dave, 'loud and clear, over http', 'read');
        await send(erin, 'and back again');
        await waitText(dave, 'and back again');
        await waitTick(erin, 'and back again', 'read');
        const seen = (await visibleMessages(dave)).map(m => [m.dir, m.text]);
        assert(JSON.stringify(seen) === JSON.stringify([
            ['in', 'can you hear me, dave?'], ['out', 'loud and clear, over http'],
            ['in', 'and back again']]), `Dave's chat shows ${JSON.stringify(seen)}`);
        const erinSeen = (await visibleMessages(erin)).map(m => [m.dir, m.text]);
        assert(JSON.stringify(erinSeen) === JSON.stringify([
            ['out', 'can you hear me, dave?'], ['in', 'loud and clear, over http'],
            ['out', 'and back again']]), `Erin's chat shows ${JSON.stringify(erinSeen)}`);
        // presence, both ways
        await waitFor(erin, () => document.querySelector('[data-testid="presence"]').textContent === 'online',
                      null, 'Erin to see Dave (long-polling) online');
        await waitFor(dave, () => document.querySelector('[data-testid="presence"]').textContent === 'online',
                      null, 'Dave to see Erin online');
        // between polls Dave stays online (each answer is followed by the
        // next poll within the debounce)
        await erin.waitForTimeout(1500);
        assert(await presenceText(erin) === 'online', 'Dave stays online between his polls');
        assert(await dave.evaluate(() => window.chat.transportKind) === 'http',
               'Dave is still on the fallback');
        await shot(dave, '16-dave-blue-ticks-over-http');
        await shot(erin, '17-erin-chat-with-dave');
    });

    await scenario('HTTP fallback: Dave closes the page ("last seen"), what came meanwhile arrives once and in order, and after a reload', async () => {
        const { erin } = P;
        await P.dave.close();
        await waitFor(erin, () => /^last seen (today|\d+ \w+) at /.test(
            document.querySelector('[data-testid="presence"]').textContent),
            null, 'Erin to see Dave "last seen" once his page is closed');
        await shot(erin, '18-erin-sees-dave-last-seen');
        const away = ['while you were away 1', 'while you were away 2', 'while you were away 3'];
        for (const t of away) {
            await send(erin, t);
            await waitTick(erin, t, 'sent');
        }
        await erin.waitForTimeout(300);
        for (const t of away) {
            assert(await tickOf(erin, t) === 'sent', `"${t}" is only stored (one grey tick) while Dave is away`);
        }
        await openFallbackPage();
        const dave = P.dave;
        await waitFallback(dave);
        await checkFallbackPath(dave);
        await openChat(dave, 'User');
        for (const t of away) {
            await waitText(dave, t);
            await waitTick(erin, t, 'read');
        }
        await waitFor(erin, () => document.querySelector('[data-testid="presence"]').textContent === 'online',
                      null, 'Erin to see Dave online again');
        await dave.waitForTimeout(1000);     // a duplicate would have come by now
        const want = ['can you hear me, dave?', 'loud and clear, over http', 'and back again', ...away];
        const before = await visibleMessages(dave);
        assert(JSON.stringify(before.map(m => m.text)) === JSON.stringify(want),
               `Dave's chat after reopening: ${JSON.stringify(before)}`);
        const seqs = before.map(m => Number(m.seq));
        assert(seqs.every((q, i) => i === 0 || q > seqs[i - 1]), `Dave's chat in seq order: ${seqs}`);
        await shot(dave, '19-dave-back-with-what-came');
        // and it all stays across a reload (IndexedDB)
        await dave.reload({ timeout: WAIT });
        await waitFor(dave, () => document.body.dataset.ready === '1', null, 'the page to start');
        await waitFallback(dave);
        await openChat(dave, 'User');
        await waitFor(dave, n => document.querySelectorAll('[data-testid="messages"] [data-testid="message"]').length >= n,
                      before.length, 'the history');
        await dave.waitForTimeout(500);
        const after = await visibleMessages(dave);
        const key = ms => JSON.stringify(ms.map(m => [m.dir, m.text, m.seq, m.tick]));
        assert(key(after) === key(before), `Dave's chat after reload: ${key(after)}, before: ${key(before)}`);
    });

    await scenario('HTTP fallback: Dave\'s polls watch Erin from the start: she closes her page, he sees "last seen" within seconds', async () => {
        const { dave, erin } = P;
        // Dave's page was just reloaded: his first waiting poll went out
        // before he subscribed to Erin (the subscribe must renew it, or
        // he would hear of her only when it ends, up to 25 s later)
        await waitFor(dave, () => document.querySelector('[data-testid="presence"]').textContent === 'online',
                      null, 'Dave to see Erin online');
        await erin.close();
        const t0 = Date.now();
        await dave.waitForFunction(() => /^last seen (today|\d+ \w+) at /.test(
            document.querySelector('[data-testid="presence"]').textContent),
            null, { timeout: 6000, polling: 100 })
            .catch(() => { throw new Error('Dave did not see Erin "last seen" within 6 s'); });
        note(`Dave saw Erin go after ${Date.now() - t0} ms (debounce 1 s)`);
        await shot(dave, '19b-dave-sees-erin-last-seen');
    });

    await scenario('HTTP fallback: no errors in the pages\' consoles (but Dave\'s refused upgrades)', async () => {
        const refused = (consoleErrors.dave || []).filter(e => REFUSED_UPGRADE.test(e)).length;
        assert(refused >= 9, `Dave's console reports each refused upgrade (${refused} of at least 9)`);
        for (const who of ['dave', 'erin']) {
            const bad = consoleTrouble(who);
            assert(bad.length === 0, `${who}'s console: ${JSON.stringify(bad)}`);
        }
    });
} else {
    note('no fallback base URL: the HTTP fallback scenarios are not run');
}

await scenario('the network heals: a client on the fallback goes back to WebSockets', async () => {
    const { alice } = P;
    // Alice's proxy starts refusing upgrades; her WebSocket is cut
    await alice.evaluate(() => {
        window.chat.wsProbe = 1000;         // probe after 1 s, not 1 min
        window.__statuses = [];
        window.__statusHook = e => window.__statuses.push(e.detail);
        window.chat.addEventListener('status', window.__statusHook);
    });
    proxy.noUpgrade();
    proxy.dropAll();
    await alice.waitForFunction(() =>
        window.chat.transportKind === 'http' && window.chat.status === 'online'
        && !document.querySelector('[data-testid="conn-transport"]').hidden,
        null, { timeout: 30000, polling: 100 });
    assert(proxy.refused >= 3, `the proxy refused ${proxy.refused} upgrades`);
    await send(alice, 'sent over the fallback');
    await waitTick(alice, 'sent over the fallback', 'sent');
    await shot(alice, '20-alice-on-the-fallback');
    // the proxy lets WebSockets through again: the probe finds it
    proxy.restore();
    await waitFor(alice, () =>
        window.chat.transportKind === 'ws' && window.chat.status === 'online'
        && document.querySelector('[data-testid="conn-transport"]').hidden,
        null, 'Alice back on a WebSocket');
    const kinds = await alice.evaluate(() => window.__statuses
        .filter(s => s.status === 'connecting').map(s => s.transport));
    assert(JSON.stringify(kinds) === JSON.stringify(['ws', 'ws', 'ws', 'http', 'ws']),
           `Alice's connects: ${JSON.stringify(kinds)}`);
    await alice.evaluate(() => window.chat.removeEventListener('status', window.__statusHook));
});

clearTimeout(killer);
note(`browser run: ${Date.now() - started} ms`);
proxy.close();
await browser.close();
console.log(`DONE ${reported}`);
process.exit(0);
