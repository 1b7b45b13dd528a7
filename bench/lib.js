// Helpers for the Node benchmarks: the HTTP API, a bounded pool, signup
// with dev codes, chat creation, and finding the ws package. load.js keeps
// its own copies (it predates this file); chaos.js uses these.
//
//   const lib = require('./lib');
//   const WebSocket = lib.requireWs();
//   const c = lib.client('http://127.0.0.1:8080', { concurrency: 64 });
//   const u = await c.signup('chaos');          // { mobile, token, userId, deviceId }
//   const chat = await c.direct(a, b);           // { id, lastSeq }
//   await c.pool(n, async (i) => { ... });

'use strict';

const http = require('http');
const https = require('https');
const path = require('path');

// The ws package, from bench/node_modules (`cd bench && npm install`) or
// t/node/node_modules (scripts/test.sh installs t/node's packages).
function requireWs() {
    const tries = [
        'ws',
        path.join(__dirname, 'node_modules', 'ws'),
        path.join(__dirname, '..', 't', 'node', 'node_modules', 'ws'),
    ];
    for (const t of tries) {
        try {
            return require(t);
        } catch (e) {
            if (e.code !== 'MODULE_NOT_FOUND') throw e;
        }
    }
    return null;
}

// true for a URL on this machine's loopback
function isLoopback(url) {
    const h = url.hostname.replace(/^\[|\]$/g, '');
    return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function randomMobile() {
    let s = '+1' + (2 + Math.floor(Math.random() * 8));
    for (let i = 0; i < 9; i++) s += Math.floor(Math.random() * 10);
    return s;
}

// Options of a script into opt, whose values give their types (boolean,
// number, string, array: repeatable): --name value, --name=value; --help
// prints the script's leading comment.
function parseArgs(argv, opt, die, filename) {
    for (let i = 0; i < argv.length; i++) {
        let a = argv[i];
        if (a === '-h' || a === '--help') {
            const src = require('fs').readFileSync(filename, 'utf8');
            const head = src.split('\n').slice(1).filter((l) => l.startsWith('//'));
            console.log(head.map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
            process.exit(0);
        }
        let val;
        const eq = a.indexOf('=');
        if (eq > 0) {
            val = a.slice(eq + 1);
            a = a.slice(0, eq);
        }
        const name = a.replace(/^--/, '');
        if (!a.startsWith('--') || !(name in opt)) die(`unknown option ${a} (try --help)`);
        if (typeof opt[name] === 'boolean') {
            opt[name] = val === undefined ? true : !/^(0|no|off|false)$/.test(val);
            continue;
        }
        if (val === undefined) {
            if (i + 1 >= argv.length) die(`${a} needs a value`);
            val = argv[++i];
        }
        if (Array.isArray(opt[name])) {
            opt[name].push(val);
        } else if (typeof opt[name] === 'number') {
            const n = Number(val);
            if (!Number.isFinite(n) || n < 0) die(`${a}: not a number: ${val}`);
            opt[name] = n;
        } else {
            opt[name] = val;
        }
    }
}

function client(baseUrl, o = {}) {
    const base = new URL(baseUrl);
    const httpMod = base.protocol === 'https:' ? https : http;
    const conc = Math.max(1, Math.floor(o.concurrency || 16));
    const agent = new httpMod.Agent({ keepAlive: true, maxSockets: conc });
    const errors = o.errors || new Map();       // "what: status code" -> count

    function countError(key) {
        errors.set(key, (errors.get(key) || 0) + 1);
    }

    // via: another agent (the long-polls of load.js have their own)
    function api(method, p, body, token, via = agent, timeout = 15000) {
        return new Promise((resolve) => {
            const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
            const headers = { Accept: 'application/json' };
            if (data) {
                headers['Content-Type'] = 'application/json';
                headers['Content-Length'] = data.length;
            }
            if (token) headers.Authorization = `Bearer ${token}`;
            const req = httpMod.request({
                agent: via, hostname: base.hostname, port: base.port,
                method, path: p, headers, timeout,
            }, (res) => {
                const parts = [];
                res.on('data', (c) => parts.push(c));
                res.on('end', () => {
                    let json = null;
                    try {
                        json = JSON.parse(Buffer.concat(parts).toString());
                    } catch (e) { /* not JSON */ }
                    resolve({ status: res.statusCode, json });
                });
            });
            req.on('timeout', () => req.destroy(new Error('timeout')));
            req.on('error', (e) => resolve({ status: 0, json: null, err: e.message }));
            if (data) req.write(data);
            req.end();
        });
    }

    function httpError(what, r) {
        const code = r.status === 0 ? r.err
            : (r.json && r.json.error && r.json.error.code) || 'no error code';
        countError(`${what}: ${r.status} ${code}`);
        return `${what}: ${r.status} ${code}`;
    }

    // fn(0..n-1), at most `conc` at a time; rejects on the first failure
    async function pool(n, fn, width = conc) {
        let next = 0;
        let failed = null;
        async function worker() {
            while (next < n && !failed) {
                const i = next++;
                try {
                    await fn(i);
                } catch (e) {
                    failed = failed || e;
                }
            }
        }
        await Promise.all(Array.from({ length: Math.min(width, n) }, worker));
        if (failed) throw failed;
    }

    // register + verify with the dev code; retries a number that is taken
    // or rate limited, and a 503 (a fault while signing up)
    async function signup(deviceName = 'bench') {
        for (let tries = 0; tries < 8; tries++) {
            const mobile = randomMobile();
            const reg = await api('POST', '/v1/register', { mobile });
            if (reg.status === 429 || reg.status === 503 || reg.status === 0) {
                httpError('register', reg);
                await new Promise((r) => setTimeout(r, 100 * (tries + 1)));
                continue;
            }
            if (reg.status !== 202) throw new Error(httpError('register', reg));
            const code = reg.json && reg.json.dev_code;
            if (!code) throw new Error('register: no dev_code (is `chat_dev_codes on;` set?)');
            const ver = await api('POST', '/v1/verify',
                                  { mobile, code, device_name: deviceName });
            if (ver.status === 409 || ver.status === 503 || ver.status === 0) {
                httpError('verify', ver);
                continue;
            }
            if (ver.status !== 200) throw new Error(httpError('verify', ver));
            return {
                mobile,
                token: ver.json.token,
                userId: String(ver.json.user_id),
                deviceId: String(ver.json.device_id),
            };
        }
        throw new Error('signup: 8 tries, no usable number');
    }

    // a direct chat of users a and b (objects with token, userId)
    async function direct(a, b) {
        const r = await api('POST', '/v1/chats', { type: 'direct', user_id: b.userId }, a.token);
        if (r.status !== 200 || !r.json || !r.json.chat_id) {
            throw new Error(httpError('direct chat', r));
        }
        return { id: String(r.json.chat_id), lastSeq: r.json.last_seq || 0 };
    }

    // a group made by members[0] with the others
    async function group(members, title) {
        const r = await api('POST', '/v1/chats', {
            type: 'group',
            title,
            members: members.slice(1).map((u) => u.userId),
        }, members[0].token);
        if (r.status !== 201 || !r.json || !r.json.chat_id) {
            throw new Error(httpError('group', r));
        }
        return { id: String(r.json.chat_id), lastSeq: r.json.last_seq || 1 };
    }

    return { base, api, pool, signup, direct, group, errors, countError, agent };
}

module.exports = { requireWs, isLoopback, randomMobile, parseArgs, client };
