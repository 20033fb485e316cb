// What the browser keeps between visits: its identity and the devices it paired with. In
// IndexedDB in the page (private to the app's origin); in memory for tests. The identity
// is an Ed25519 private key in libp2p's protobuf form: anyone who can run script in this
// origin can read it, which is why the page is strict about what it loads (see README).

export interface Store {
  get: (key: string) => Promise<Uint8Array | undefined>
  put: (key: string, value: Uint8Array) => Promise<void>
  delete: (key: string) => Promise<void>
}

export class MemoryStore implements Store {
  private readonly values = new Map<string, Uint8Array>()
  async get (key: string): Promise<Uint8Array | undefined> { return this.values.get(key)?.slice() }
  async put (key: string, value: Uint8Array): Promise<void> { this.values.set(key, value.slice()) }
  async delete (key: string): Promise<void> { this.values.delete(key) }
}

const DB_NAME = 'loopsy'
const STORE = 'state'

export class IndexedDbStore implements Store {
  private constructor (private readonly db: IDBDatabase) {}

  static async open (): Promise<IndexedDbStore> {
    const request = indexedDB.open(DB_NAME, 1)
    request.onupgradeneeded = () => { request.result.createObjectStore(STORE) }
    return new IndexedDbStore(await done(request))
  }

  async get (key: string): Promise<Uint8Array | undefined> {
    const value: unknown = await done(this.db.transaction(STORE).objectStore(STORE).get(key))
    return value instanceof Uint8Array ? value : undefined
  }

  async put (key: string, value: Uint8Array): Promise<void> {
    await done(this.db.transaction(STORE, 'readwrite').objectStore(STORE).put(value, key))
  }

  async delete (key: string): Promise<void> {
    await done(this.db.transaction(STORE, 'readwrite').objectStore(STORE).delete(key))
  }
}

function done<T> (request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => { resolve(request.result) }
    request.onerror = () => { reject(request.error ?? new Error('IndexedDB request failed')) }
  })
}
