#!/usr/bin/env node
// Messaging load: N users, each with one device and one WebSocket, send
// 1:1 and group messages for D seconds; every receiver measures the
// end-to-end latency (the sender's timestamp is in the text), acks as a
// client would, and checks each chat's seqs (dense, strictly increasing,
// no duplicates). Reports stored and delivered messages/s, latency
// percentiles, errors, and loss/duplicates/reorders (exit 1 unless all 0).
//
// Needs a running server with `chat_dev_codes on`, e.g. `make run` in
// another terminal, and, once, the ws package:
//
//   cd bench && npm install
//   node bench/load.js [options]
//   node bench/load.js --users 200 --groups 10 --group-size 20 --seconds 10
//   node bench/load.js --rate 2000 --seconds 10     (latency at a set load)
//
// Options (defaults in brackets):
//   --base URL         server [http://127.0.0.1:8080]
//   --ws-path PATH     WebSocket path [/v1/ws]
//   --users N          users, one device and one socket each [200]
//   --groups G         groups [10]
//   --group-size K     members per group (users g*K .. g*K+K-1, wrapping) [20]
//   --group-ratio F    share of each user's sends that go to its group [0.5]
//   --seconds D        sending window [10]
//   --rate R           messages/s over all users, spread evenly; 0 = as fast
//                      as possible, each socket keeping --window sends
//                      unanswered [0]
//   --window W         at most W unanswered sends per socket [32]
//   --drain S          after the window, wait at most S seconds for every
//                      sent message to reach every receiver [10]
//   --concurrency C    parallel signups, chat creations and socket opens [16]
//   --deflate          offer permessage-deflate (off: the server then
//                      compresses nothing)
//   --transport T      ws; poll: the HTTP fallback, each user long-polling
//                      GET /v1/events (acking what it got on the next poll)
//                      and sending with POST /v1/send; sse: a Server-Sent
//                      Events stream each, POST /v1/send and /v1/ack [ws]
//
// Users are paired for direct chats (0-1, 2-3, ...; an odd last user pairs
// with user 0). Phone numbers are random (+1 and 10 digits), so reruns do
// not meet the register rate limit of 3 per number in 10 minutes.
//
// Counting: a message "stored" is a `sent` answer. A message to a chat of
// K members is owed to K-1 devices (not the sending one): those are the
// expected deliveries. A device's own seqs count in its order (it receives
// 1, 2, 4 when it sent 3), and so do system messages (a group's `created`
// is seq 1, sent to every member). Latency is now minus the timestamp in
// the text, on this process's monotonic clock; it is only meaningful while
// this process has CPU to spare (see "client CPU" in the report).

'use strict';

const http = require('http');
const https = require('https');
const { performance } = require('perf_hooks');

const lib = require('./lib');

const WebSocket = lib.requireWs();


// ------------------------------------------------------------------ options

const opt = {
    base: 'http://127.0.0.1:8080',
    'ws-path': '/v1/ws',
    users: 200,
    groups: 10,
    'group-size': 20,
    'group-ratio': 0.5,
    seconds: 10,
    rate: 0,
    window: 32,
    drain: 10,
    concurrency: 16,
    deflate: false,
    transport: 'ws',
};

lib.parseArgs(process.argv.slice(2), opt, die, __filename);

const N = Math.floor(opt.users);
const G = Math.floor(opt.groups);
const K = Math.floor(opt['group-size']);
const RATIO = opt['group-ratio'];
const WINDOW = Math.max(1, Math.floor(opt.window));
const CONC = Math.max(1, Math.floor(opt.concurrency));

if (N < 2) die('--users must be at least 2');
if (G > 0 && (K < 2 || K > N)) die('--group-size must be between 2 and --users');
if (RATIO > 1) die('--group-ratio is a share: 0 to 1');
if (!['ws', 'poll', 'sse'].includes(opt.transport)) die('--transport: ws, poll or sse');

const base = new URL(opt.base);
if (base.protocol !== 'http:' && base.protocol !== 'https:') die('--base: http:// or https://');
const httpMod = base.protocol === 'https:' ? https : http;
// --transport poll: a poll and a send at a time per user, each its own socket
const pollAgent = new httpMod.Agent({ keepAlive: true, maxSockets: Infinity });
const wsUrl = (base.protocol === 'https:' ? 'wss://' : 'ws://') + base.host + opt['ws-path'];

function die(msg) {
    console.error(`load.js: ${msg}`);
    process.exit(2);
}


// -------------------------------------------------------------------- state

const errors = new Map();       // "where code" -> count
function countError(key) {
    errors.set(key, (errors.get(key) || 0) + 1);
}

const others = new Map();       // other server frame types -> count

const users = [];               // { i, mobile, token, userId, deviceId, ws, ... }
const chats = [];               // { id, type, members: [user], k, maxSeq }

const st = {
    stored: 0,                  // `sent` answers
    expected: 0,                // deliveries owed for the stored messages
    delivered: 0,               // text messages received
    system: 0,                  // system messages received
    duplicates: 0,              // a seq a device already had (or sent)
    reorders: 0,                // a seq lower than the last received
    ownEcho: 0,                 // a device was sent its own message
    unknownChat: 0,             // a msg for a chat the device is not in
    issued: 0,                  // sends written to sockets
    answered: 0,                // sends answered (sent or error)
    retries: 0,                 // sends sent again after `unavailable`
    inflight: 0,                // sends unanswered
    behind: 0,                  // rate mode: ticks where every socket was full
    closed: 0,                  // sockets closed by the server
};

let sending = false;            // inside the sending window

// latencies in ms, appended to growable Float64Arrays
function Samples() {
    this.a = new Float64Array(1 << 16);
    this.n = 0;
}
Samples.prototype.push = function (v) {
    if (this.n === this.a.length) {
        const b = new Float64Array(this.a.length * 2);
        b.set(this.a);
        this.a = b;
    }
    this.a[this.n++] = v;
};
Samples.prototype.sorted = function () {
    return this.a.subarray(0, this.n).sort();
};

const e2e = new Samples();      // send -> msg on a receiver
const storeLat = new Samples(); // send -> `sent` on the sender


// --------------------------------------------------------------------- HTTP

const cl = lib.client(opt.base, { concurrency: CONC, errors });
const { api, pool, httpError } = cl;

async function signup(i) {
    const u = await cl.signup('bench');
    users[i] = {
        i,
        mobile: u.mobile,
        token: u.token,
        userId: u.userId,
        deviceId: u.deviceId,
        ws: null,
        chats: new Map(),       // chat_id -> receiver state
        direct: [],             // chats it sends to
        groups: [],
        acc: 0,                 // group-ratio accumulator
        nd: 0, ng: 0,           // round robin in direct / groups
        n: 0,                   // sends issued
        stored: 0,              // its `sent` answers
        inflight: 0,
        pending: new Map(),     // send id -> { t, frame, tries }
        synced: false,
        syncCount: 0,
        closedByUs: false,
    };
}

function addChat(id, type, members, maxSeq) {
    const chat = { id, type, members, k: members.length, maxSeq };
    chats.push(chat);
    for (const u of members) {
        u.chats.set(id, {
            chat,
            seen: new Uint8Array(64),   // by seq: 1 received, 2 own send
            last: 0,                    // highest seq received
            recv: 0,                    // seqs received
            own: 0,                     // own seqs (`sent` answers)
            unacked: 0,                 // received since the last ack
            acked: 0,                   // seq of the last ack
        });
    }
    return chat;
}

async function createChats() {
    const pairs = [];
    for (let i = 0; i + 1 < N; i += 2) pairs.push([users[i], users[i + 1]]);
    if (N % 2) pairs.push([users[N - 1], users[0]]);

    await pool(pairs.length, async (p) => {
        const [a, b] = pairs[p];
        const r = await api('POST', '/v1/chats',
                            { type: 'direct', user_id: b.userId }, a.token);
        if (r.status !== 200 || !r.json || !r.json.chat_id) {
            throw new Error(httpError('direct chat', r));
        }
        const chat = addChat(String(r.json.chat_id), 'direct', [a, b],
                             r.json.last_seq || 0);
        a.direct.push(chat);
        b.direct.push(chat);
    });

    await pool(G, async (g) => {
        const members = [];
        for (let j = 0; j < K; j++) members.push(users[(g * K + j) % N]);
        const r = await api('POST', '/v1/chats', {
            type: 'group',
            title: `bench ${g + 1}`,
            members: members.slice(1).map((u) => u.userId),
        }, members[0].token);
        if (r.status !== 201 || !r.json || !r.json.chat_id) {
            throw new Error(httpError('group', r));
        }
        const chat = addChat(String(r.json.chat_id), 'group', members,
                             r.json.last_seq || 1);
        for (const u of members) u.groups.push(chat);
    });
}


// ---------------------------------------------------------------- WebSocket

function growTo(rs, seq) {
    let n = rs.seen.length;
    while (n <= seq) n *= 2;
    const a = new Uint8Array(n);
    a.set(rs.seen);
    rs.seen = a;
}

function sendAck(u, rs) {
    rs.unacked = 0;
    if (rs.last > rs.acked && u.ws.readyState === WebSocket.OPEN) {
        rs.acked = rs.last;
        u.ws.send(`{"type":"ack","chat_id":"${rs.chat.id}","seq":${rs.last}}`);
    }
}

function onMsg(u, m, now) {
    const rs = u.chats.get(String(m.chat_id));
    if (rs === undefined) {
        st.unknownChat++;
        return;
    }
    const seq = m.seq;
    if (!Number.isInteger(seq) || seq < 1 || seq > 1e8) {
        countError('msg: bad seq');
        return;
    }
    if (m.from_device != null && String(m.from_device) === u.deviceId) st.ownEcho++;
    if (seq >= rs.seen.length) growTo(rs, seq);
    if (rs.seen[seq] !== 0) {
        st.duplicates++;
        return;
    }
    rs.seen[seq] = 1;
    rs.recv++;
    if (seq < rs.last) {
        st.reorders++;
    } else {
        rs.last = seq;
    }
    if (seq > rs.chat.maxSeq) rs.chat.maxSeq = seq;

    if (m.kind === 'text') {
        st.delivered++;
        const text = m.text;
        // {"t":<ms>,"n":<n>}: parseFloat stops at the comma
        if (typeof text === 'string' && text.startsWith('{"t":')) {
            const t = parseFloat(text.substring(5));
            if (t === t) e2e.push(now - t);
        }
    } else {
        st.system++;
    }

    if (++rs.unacked >= 50) sendAck(u, rs);
}

function onSent(u, m, now) {
    const p = u.pending.get(m.id);
    if (p === undefined) {
        countError('sent: unknown id');
        return;
    }
    const t = p.t;
    u.pending.delete(m.id);
    u.inflight--;
    st.inflight--;
    st.answered++;
    storeLat.push(now - t);

    const rs = u.chats.get(String(m.chat_id));
    const seq = m.seq;
    if (rs === undefined || !Number.isInteger(seq) || seq < 1 || seq > 1e8) {
        countError('sent: bad chat_id or seq');
    } else {
        if (seq >= rs.seen.length) growTo(rs, seq);
        if (rs.seen[seq] !== 0) {
            st.duplicates++;            // a seq this device also received
        } else {
            rs.seen[seq] = 2;
            rs.own++;
        }
        if (seq > rs.chat.maxSeq) rs.chat.maxSeq = seq;
        st.stored++;
        u.stored++;
        st.expected += rs.chat.k - 1;
    }
    if (sending && opt.rate === 0) sendOne(u);
}

function onError(u, m) {
    countError(`ws error: ${m.code}`);
    const p = m.id == null ? undefined : u.pending.get(m.id);
    if (p === undefined) return;
    // PostgreSQL did not answer in time: the message may or may not be
    // stored. As a client should, send the same id again (idempotent):
    // the answer is then the stored seq, or a first store.
    if (m.code === 'unavailable' && p.tries < 20) {
        p.tries++;
        st.retries++;
        setTimeout(() => {
            if (u.ws.readyState === WebSocket.OPEN) u.ws.send(p.frame);
        }, 100);
        return;
    }
    u.pending.delete(m.id);
    u.inflight--;
    st.inflight--;
    st.answered++;
    // as fast as possible: refill, but not in a tight loop of refusals
    if (sending && opt.rate === 0) setTimeout(() => sending && sendOne(u), 10);
}

function onFrame(u, data) {
    const now = performance.now();
    let m;
    try {
        m = JSON.parse(data);
    } catch (e) {
        countError('ws: frame not JSON');
        return;
    }
    switch (m.type) {
    case 'msg':
        onMsg(u, m, now);
        break;
    case 'sent':
        onSent(u, m, now);
        break;
    case 'error':
        onError(u, m);
        break;
    case 'ready':
        if (m.device_id != null) u.deviceId = String(m.device_id);
        break;
    case 'synced':
        u.synced = true;
        u.syncCount = m.count;
        if (u.onSynced) u.onSynced();
        break;
    default:
        others.set(m.type, (others.get(m.type) || 0) + 1);
    }
}

// --transport poll: what stands for a user's WebSocket. Sends are POSTs
// whose answers are fed to onFrame() as frames; acks ride on the next
// poll (everything received until then); a poll answers the objects the
// WebSocket would have sent.
class PollConn {
    constructor(u) {
        this.u = u;
        this.readyState = WebSocket.OPEN;
        this.onClose = [];
        this.syncing = true;
        this.sse = false;
        this.acks = new Map();          // a poll's: chat id -> seq
    }

    send(frame) {
        const m = JSON.parse(frame);
        if (m.type === 'ack' && this.sse) {
            api('POST', '/v1/ack', m, this.u.token, pollAgent).then((r) => {
                if (r.status !== 204) countError(`ack: ${r.status === 0 ? r.err : r.status}`);
            });
            return;
        }
        if (m.type === 'ack') {             // goes with the next poll
            this.acks.set(m.chat_id, Math.max(m.seq, this.acks.get(m.chat_id) || 0));
            return;
        }
        if (m.type !== 'send') return;
        api('POST', '/v1/send', m, this.u.token, pollAgent).then((r) => {
            if (this.readyState !== WebSocket.OPEN) return;
            const code = r.status === 0 ? r.err
                : (r.json && r.json.error && r.json.error.code) || `HTTP ${r.status}`;
            onFrame(this.u, r.status === 200 ? JSON.stringify(r.json)
                : JSON.stringify({ type: 'error', id: m.id, code }));
        });
    }

    async loop(fail) {
        const u = this.u;
        while (this.readyState === WebSocket.OPEN) {
            for (const rs of u.chats.values()) {
                if (rs.last > rs.acked) {
                    rs.acked = rs.last;
                    this.acks.set(rs.chat.id, rs.last);
                }
            }
            const acks = [...this.acks].map(([c, seq]) => `${c}:${seq}`);
            this.acks.clear();
            const wait = this.syncing ? 0 : 25;
            const r = await api('GET', `/v1/events?wait=${wait}`
                                + (acks.length ? `&ack=${acks.join(',')}` : ''),
                                undefined, u.token, pollAgent, (wait + 10) * 1000);
            if (this.readyState !== WebSocket.OPEN) return;
            if (r.status !== 200 || !Array.isArray(r.json)) {
                countError(`poll: ${r.status === 0 ? r.err : `HTTP ${r.status}`}`);
                this.close();
                fail(new Error(`user ${u.i}: poll failed`));
                return;
            }
            let brought = false;
            for (const m of r.json) {
                if (m.type === 'msg' || m.type === 'expired') brought = true;
                if (m.type === 'synced') this.syncing = false;
                onFrame(u, JSON.stringify(m));
            }
            if (this.syncing && !brought) {
                // the backlog ended on a page boundary (docs/protocol.md)
                this.syncing = false;
                onFrame(u, '{"type":"synced","count":0}');
            }
        }
    }

    // --transport sse: one stream, events as the WebSocket's frames
    stream(fail) {
        const u = this.u;
        this.sse = true;
        const req = httpMod.request({
            agent: pollAgent,
            hostname: base.hostname,
            port: base.port,
            path: '/v1/events',
            headers: { Accept: 'text/event-stream', Authorization: `Bearer ${u.token}` },
        }, (res) => {
            if (res.statusCode !== 200) {
                countError(`sse: HTTP ${res.statusCode}`);
                fail(new Error(`user ${u.i}: stream refused`));
                res.resume();
                return;
            }
            let buf = '';
            res.setEncoding('utf8');
            res.on('data', (chunk) => {
                buf += chunk;
                let end;
                while ((end = buf.indexOf('\n\n')) >= 0) {
                    for (const line of buf.slice(0, end).split('\n')) {
                        if (line.startsWith('data: ')) onFrame(u, line.slice(6));
                    }
                    buf = buf.slice(end + 2);
                }
            });
            res.on('end', () => {
                if (this.readyState === WebSocket.OPEN) {
                    st.closed++;
                    countError('sse: stream ended by the server');
                }
            });
        });
        req.on('error', (e) => {
            if (this.readyState === WebSocket.OPEN) {
                countError(`sse: ${e.message}`);
                fail(e);
            }
        });
        req.end();
        this.req = req;
    }

    once(event, fn) {
        if (event === 'close') this.onClose.push(fn);
    }

    close() {
        if (this.readyState === WebSocket.CLOSED) return;
        this.readyState = WebSocket.CLOSED;
        if (this.req) this.req.destroy();
        for (const fn of this.onClose.splice(0)) fn();
    }

    terminate() {
        this.close();
    }
}

function connect(u) {
    if (opt.transport !== 'ws') {
        return new Promise((resolve, reject) => {
            u.ws = new PollConn(u);
            const timer = setTimeout(() => {
                reject(new Error(`user ${u.i}: no "synced" within 15 s`));
                u.ws.close();
            }, 15000);
            u.onSynced = () => {
                clearTimeout(timer);
                u.onSynced = null;
                resolve();
            };
            const fail = (e) => {
                clearTimeout(timer);
                reject(e);
            };
            if (opt.transport === 'sse') {
                u.ws.stream(fail);
            } else {
                u.ws.loop(fail);
            }
        });
    }
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(wsUrl, { perMessageDeflate: opt.deflate });
        u.ws = ws;
        const timer = setTimeout(() => {
            reject(new Error(`user ${u.i}: no "synced" within 15 s`));
            ws.terminate();
        }, 15000);
        u.onSynced = () => {
            clearTimeout(timer);
            u.onSynced = null;
            resolve();
        };
        ws.on('open', () => {
            ws.send(JSON.stringify({ type: 'auth', token: u.token }));
        });
        ws.on('message', (data) => onFrame(u, data));
        ws.on('error', (e) => {
            countError(`ws: ${e.code || e.message}`);
            clearTimeout(timer);
            reject(new Error(`user ${u.i}: ${e.message}`));
        });
        ws.on('close', (code) => {
            if (!u.closedByUs) {
                st.closed++;
                countError(`ws closed by the server: ${code}`);
                clearTimeout(timer);
                reject(new Error(`user ${u.i}: socket closed (${code})`));
            }
        });
    });
}


// ------------------------------------------------------------------ sending

function sendOne(u) {
    if (u.inflight >= WINDOW || u.ws.readyState !== WebSocket.OPEN) return false;
    let chat;
    if (u.groups.length === 0) {
        chat = u.direct[u.nd++ % u.direct.length];
    } else if (u.direct.length === 0) {
        chat = u.groups[u.ng++ % u.groups.length];
    } else {
        u.acc += RATIO;
        if (u.acc >= 1) {
            u.acc -= 1;
            chat = u.groups[u.ng++ % u.groups.length];
        } else {
            chat = u.direct[u.nd++ % u.direct.length];
        }
    }
    const n = u.n++;
    const id = n.toString(36);
    const t = performance.now();
    const frame = `{"type":"send","id":"${id}","chat_id":"${chat.id}",`
        + `"text":"{\\"t\\":${t.toFixed(3)},\\"n\\":${n}}"}`;
    u.pending.set(id, { t, frame, tries: 0 });
    u.inflight++;
    st.inflight++;
    st.issued++;
    u.ws.send(frame);
    return true;
}

// --rate R: every 5 ms, issue what is due, round robin over the users
function rateTicker(t0) {
    let cursor = 0;
    return setInterval(() => {
        const due = Math.floor(opt.rate * (performance.now() - t0) / 1000) - st.issued;
        for (let k = 0; k < due; k++) {
            let tries = 0;
            while (!sendOne(users[cursor])) {
                cursor = (cursor + 1) % N;
                if (++tries === N) {
                    st.behind++;
                    return;
                }
            }
            cursor = (cursor + 1) % N;
        }
    }, 5);
}


// ------------------------------------------------------------------- report

function pct(sorted, p) {
    if (sorted.length === 0) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)];
}

function latLine(name, samples) {
    const s = samples.sorted();
    if (s.length === 0) return `${name}: no samples`;
    const f = (v) => (v < 10 ? v.toFixed(2) : v.toFixed(1));
    return `${name}: p50 ${f(pct(s, 50))} ms, p90 ${f(pct(s, 90))} ms, `
        + `p99 ${f(pct(s, 99))} ms, max ${f(s[s.length - 1])} ms `
        + `(${s.length} samples)`;
}

// every receiver has every seq of each of its chats (own or received)
function complete() {
    if (st.inflight > 0) return false;
    for (const c of chats) {
        for (const u of c.members) {
            const rs = u.chats.get(c.id);
            if (rs.recv + rs.own < c.maxSeq) return false;
        }
    }
    return true;
}

function missingSeqs() {
    let missing = 0;
    for (const c of chats) {
        for (const u of c.members) {
            const rs = u.chats.get(c.id);
            for (let s = 1; s <= c.maxSeq; s++) {
                if (s >= rs.seen.length || rs.seen[s] === 0) missing++;
            }
        }
    }
    return missing;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));


// --------------------------------------------------------------------- main

async function main() {
    const mode = opt.rate > 0 ? `${opt.rate} msgs/s target` : 'as fast as possible';
    const via = {
        poll: 'HTTP fallback: long-polls and POST /v1/send',
        sse: 'HTTP fallback: Server-Sent Events, POST /v1/send and /v1/ack',
        ws: `WebSocket ${wsUrl}${opt.deflate ? ', deflate' : ''}`,
    };
    console.log(`server ${opt.base} (${via[opt.transport]})`);
    console.log(`${N} users, ${Math.ceil(N / 2)} direct chats, ${G} groups of ${K}, `
        + `${RATIO * 100}% of sends to groups; ${opt.seconds} s, ${mode}, `
        + `window ${WINDOW} per socket`);

    let t = performance.now();
    await pool(N, signup);
    let dt = (performance.now() - t) / 1000;
    console.log(`signed up ${N} users in ${dt.toFixed(1)} s (${(N / dt).toFixed(0)}/s)`);

    t = performance.now();
    await createChats();
    dt = (performance.now() - t) / 1000;
    console.log(`created ${chats.length} chats in ${dt.toFixed(1)} s`);

    t = performance.now();
    await pool(N, (i) => connect(users[i]));
    dt = (performance.now() - t) / 1000;
    const syncCount = users.reduce((a, u) => a + (u.syncCount || 0), 0);
    console.log(`opened ${N} sockets, all synced in ${dt.toFixed(1)} s `
        + `(${syncCount} messages in the syncs)`);

    // acks: every 100 ms for what is unacked (and at 50 in onMsg)
    const ackTimer = setInterval(() => {
        for (const u of users) {
            for (const rs of u.chats.values()) {
                if (rs.unacked > 0) sendAck(u, rs);
            }
        }
    }, 100);

    // the sending window
    const secs = opt.seconds;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const d0 = st.delivered;
    sending = true;
    let ticker = null;
    if (opt.rate > 0) {
        ticker = rateTicker(t0);
    } else {
        for (const u of users) while (sendOne(u));
    }

    let last = { t: t0, stored: 0, delivered: d0 };
    const progress = setInterval(() => {
        const now = performance.now();
        const el = (now - last.t) / 1000;
        console.log(`  ${((now - t0) / 1000).toFixed(0).padStart(3)} s: `
            + `stored ${((st.stored - last.stored) / el).toFixed(0)}/s, `
            + `delivered ${((st.delivered - last.delivered) / el).toFixed(0)}/s, `
            + `${st.inflight} sends unanswered`);
        last = { t: now, stored: st.stored, delivered: st.delivered };
    }, 1000);

    await sleep(secs * 1000);
    sending = false;
    if (ticker) clearInterval(ticker);
    clearInterval(progress);
    const t1 = performance.now();
    const win = (t1 - t0) / 1000;
    const storedWin = st.stored;
    const deliveredWin = st.delivered - d0;
    const issuedWin = st.issued;
    const cpu = process.cpuUsage(cpu0);

    // drain: every sent message to every receiver, bounded
    const deadline = performance.now() + opt.drain * 1000;
    while (!complete() && performance.now() < deadline) await sleep(20);
    const drainSecs = (performance.now() - t1) / 1000;
    const drained = complete();

    // final acks (so the server may delete everything), then close
    clearInterval(ackTimer);
    for (const u of users) {
        for (const rs of u.chats.values()) {
            let top = rs.last;
            for (let s = rs.seen.length - 1; s > top; s--) {
                if (rs.seen[s] !== 0) {
                    top = s;
                    break;
                }
            }
            if (top > rs.acked && u.ws.readyState === WebSocket.OPEN) {
                rs.acked = top;
                u.ws.send(`{"type":"ack","chat_id":"${rs.chat.id}","seq":${top}}`);
            }
        }
    }
    await Promise.all(users.map((u) => new Promise((resolve) => {
        u.closedByUs = true;
        if (u.ws.readyState === WebSocket.CLOSED) return resolve();
        u.ws.once('close', resolve);
        u.ws.close(1000);
        setTimeout(() => {
            u.ws.terminate();
            resolve();
        }, 3000);
    })));
    cl.agent.destroy();
    pollAgent.destroy();

    // report
    const missing = missingSeqs();
    const lost = Math.max(0, st.expected - st.delivered);
    const systemExpected = G * K;
    console.log('');
    console.log(`window ${win.toFixed(1)} s; then ${drainSecs.toFixed(1)} s until `
        + (drained ? 'every message was delivered'
            : `the drain limit (${opt.drain} s): NOT everything arrived`));
    console.log(`sends: ${issuedWin} issued in the window, ${st.stored} stored (sent answers), `
        + `${st.answered - st.stored} refused, ${st.inflight} never answered; `
        + `${st.retries} resends of the same id after "unavailable"`);
    console.log(`stored: ${(storedWin / win).toFixed(0)} msgs/s over the window`
        + (opt.rate > 0 ? ` (target ${opt.rate}/s${st.behind ? `; all sockets `
            + `full ${st.behind} times: the server did not keep up` : ''})` : ''));
    console.log(`deliveries: ${st.expected} expected, ${st.delivered} received `
        + `(${deliveredWin} in the window: ${(deliveredWin / win).toFixed(0)} delivered msgs/s)`);
    console.log(`system messages: ${st.system} received, ${systemExpected} expected`);
    console.log(latLine('end-to-end latency (send -> msg)', e2e));
    console.log(latLine('store latency (send -> sent)', storeLat));
    const per = users.map((u) => u.stored).sort((a, b) => a - b);
    console.log(`stored per socket: min ${per[0]}, p10 ${pct(per, 10)}, `
        + `median ${pct(per, 50)}, p90 ${pct(per, 90)}, max ${per[N - 1]}`);
    console.log(`client CPU: ${((cpu.user + cpu.system) / 1e4 / win).toFixed(0)}% `
        + `of one core during the window`);
    if (errors.size) {
        console.log('errors:');
        for (const [k, v] of [...errors].sort()) console.log(`  ${k}: ${v}`);
    } else {
        console.log('errors: none');
    }
    if (others.size) {
        console.log('other frames: '
            + [...others].map(([k, v]) => `${k} ${v}`).join(', '));
    }

    const checks = {
        'lost (deliveries expected - received)': lost,
        'missing seqs (gaps on a device)': missing,
        duplicates: st.duplicates,
        reorders: st.reorders,
        'own messages echoed': st.ownEcho,
        'msgs for unknown chats': st.unknownChat,
        'sends never answered': st.inflight,
        'sockets closed by the server': st.closed,
        'system messages missing': Math.max(0, systemExpected - st.system),
    };
    const bad = Object.entries(checks).filter(([, v]) => v > 0);
    const extra = st.delivered - st.expected;
    if (extra > 0) console.log(`note: ${extra} deliveries more than expected (refused sends stored?)`);
    console.log(bad.length === 0
        ? 'integrity: OK (no loss, no duplicates, no reorders)'
        : 'integrity: FAILED: ' + bad.map(([k, v]) => `${k} ${v}`).join(', '));
    process.exit(bad.length === 0 ? 0 : 1);
}

main().catch((e) => {
    console.error(`load.js: ${e.message}`);
    if (errors.size) {
        for (const [k, v] of errors) console.error(`  ${k}: ${v}`);
    }
    process.exit(2);
});
