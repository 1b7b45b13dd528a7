// Storage for ChatClient: what the device holds across page loads.
//
// The server deletes a message once every device it is owed to has acked
// it, so the history a person sees lives here. Stores (IndexedDB object
// stores, or maps in MemoryStore):
//
//   kv        {k, v}                        the account (token), contacts
//   chats     {chat_id, type, title, members, last_seq, ...}
//   messages  {chat_id, seq, from, id, ts, kind, text, media, ...}
//   outbox    {id, chat_id, text, media, created, failed?}   not yet `sent`
//   marks     {chat_id, user_id, delivered, read}            receipt marks
//
// Both classes have the same promise-based interface, so a third party
// (or a test under node) can use MemoryStore where there is no IndexedDB.

const STORES = {
    kv: 'k',
    chats: 'chat_id',
    messages: ['chat_id', 'seq'],
    outbox: 'id',
    marks: ['chat_id', 'user_id'],
};

function req(r) {
    return new Promise((resolve, reject) => {
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
    });
}

export class IdbStore {
    static async open(name = 'chat-client') {
        const open = indexedDB.open(name, 1);
        open.onupgradeneeded = () => {
            const db = open.result;
            for (const [store, keyPath] of Object.entries(STORES)) {
                if (!db.objectStoreNames.contains(store)) {
                    db.createObjectStore(store, { keyPath });
                }
            }
        };
        return new IdbStore(await req(open));
    }

    constructor(db) {
        this.db = db;
    }

    async get(store, key) {
        const tx = this.db.transaction(store, 'readonly');
        return req(tx.objectStore(store).get(key));
    }

    async getAll(store) {
        const tx = this.db.transaction(store, 'readonly');
        return req(tx.objectStore(store).getAll());
    }

    // Resolves once the write is durable (the transaction completed): the
    // client acks a message only after this.
    put(store, value) {
        return this._write(store, s => s.put(value));
    }

    delete(store, key) {
        return this._write(store, s => s.delete(key));
    }

    clear() {
        const names = Object.keys(STORES);
        const tx = this.db.transaction(names, 'readwrite');
        for (const n of names) {
            tx.objectStore(n).clear();
        }
        return done(tx);
    }

    _write(store, fn) {
        const tx = this.db.transaction(store, 'readwrite');
        fn(tx.objectStore(store));
        return done(tx);
    }
}

function done(tx) {
    return new Promise((resolve, reject) => {
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
    });
}

function keyOf(store, value) {
    const kp = STORES[store];
    return Array.isArray(kp) ? kp.map(k => value[k]).join('\u0000')
                             : value[kp];
}

export class MemoryStore {
    constructor() {
        this.maps = {};
        for (const s of Object.keys(STORES)) {
            this.maps[s] = new Map();
        }
    }

    async get(store, key) {
        const k = Array.isArray(key) ? key.join('\u0000') : key;
        return structuredClone(this.maps[store].get(k));
    }

    async getAll(store) {
        return [...this.maps[store].values()].map(v => structuredClone(v));
    }

    async put(store, value) {
        this.maps[store].set(keyOf(store, value), structuredClone(value));
    }

    async delete(store, key) {
        this.maps[store].delete(Array.isArray(key) ? key.join('\u0000') : key);
    }

    async clear() {
        for (const m of Object.values(this.maps)) {
            m.clear();
        }
    }
}
