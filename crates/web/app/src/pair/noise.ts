// The pairing handshake's cryptography: Noise_NNpsk0_25519_ChaChaPoly_SHA256 (Noise
// specification revision 34), as the Rust side runs it with `snow`. Two messages:
//   -> psk, e        (the joiner, initiator)
//   <- e, ee         (the inviter, responder)
// then two cipher states for the sealed hello and done. Primitives are @noble's audited ones.

import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { x25519 } from '@noble/curves/ed25519.js'
import { hmac } from '@noble/hashes/hmac.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { concat, utf8 } from '../bytes.js'

export const NOISE_PATTERN = 'Noise_NNpsk0_25519_ChaChaPoly_SHA256'
/** The largest Noise message. */
export const MAX_NOISE = 65_535
const DH_LEN = 32
const TAG_LEN = 16

export class NoiseError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'NoiseError'
  }
}

/** A Noise CipherState: a key and a nonce counter; no key means plaintext. */
export class CipherState {
  private n = 0n

  constructor (private k: Uint8Array | null = null) {}

  hasKey (): boolean { return this.k !== null }

  encrypt (ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.k === null) return plaintext.slice()
    const out = chacha20poly1305(this.k, this.nonce(), ad).encrypt(plaintext)
    this.n++
    return out
  }

  decrypt (ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.k === null) return ciphertext.slice()
    let out: Uint8Array
    try {
      out = chacha20poly1305(this.k, this.nonce(), ad).decrypt(ciphertext)
    } catch {
      throw new NoiseError('decryption failed')
    }
    // The nonce moves on only when a message authenticates, as in the spec.
    this.n++
    return out
  }

  /** 32 bits of zeros, then the counter as 64-bit little-endian. */
  private nonce (): Uint8Array {
    if (this.n >= 0xffffffffffffffffn) throw new NoiseError('nonce exhausted')
    const nonce = new Uint8Array(12)
    new DataView(nonce.buffer).setBigUint64(4, this.n, true)
    return nonce
  }
}

/** HKDF as Noise defines it, with HMAC-SHA256. */
function hkdf (ck: Uint8Array, ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const temp = hmac(sha256, ck, ikm)
  const out1 = hmac(sha256, temp, Uint8Array.of(1))
  const out2 = hmac(sha256, temp, concat(out1, Uint8Array.of(2)))
  if (outputs === 2) return [out1, out2]
  return [out1, out2, hmac(sha256, temp, concat(out2, Uint8Array.of(3)))]
}

class SymmetricState {
  ck: Uint8Array
  h: Uint8Array
  cipher = new CipherState()

  constructor (protocolName: string) {
    const name = utf8(protocolName)
    // A name longer than the hash is hashed; a shorter one is zero-padded.
    this.h = name.length <= 32 ? concat(name, new Uint8Array(32 - name.length)) : sha256(name)
    this.ck = this.h
  }

  mixKey (ikm: Uint8Array): void {
    const [ck, k] = hkdf(this.ck, ikm, 2) as [Uint8Array, Uint8Array]
    this.ck = ck
    this.cipher = new CipherState(k)
  }

  mixHash (data: Uint8Array): void {
    this.h = sha256(concat(this.h, data))
  }

  mixKeyAndHash (ikm: Uint8Array): void {
    const [ck, th, k] = hkdf(this.ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array]
    this.ck = ck
    this.mixHash(th)
    this.cipher = new CipherState(k)
  }

  encryptAndHash (plaintext: Uint8Array): Uint8Array {
    const out = this.cipher.encrypt(this.h, plaintext)
    this.mixHash(out)
    return out
  }

  decryptAndHash (ciphertext: Uint8Array): Uint8Array {
    const out = this.cipher.decrypt(this.h, ciphertext)
    this.mixHash(ciphertext)
    return out
  }

  split (): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.ck, new Uint8Array(0), 2) as [Uint8Array, Uint8Array]
    return [new CipherState(k1), new CipherState(k2)]
  }
}

/** The keys after the handshake: one way each. */
export interface Transport {
  send: CipherState
  receive: CipherState
  /** The handshake hash, from which both sides show the check code. */
  handshakeHash: Uint8Array
}

export interface HandshakeOptions {
  psk: Uint8Array
  prologue: Uint8Array
  initiator: boolean
  /** A fixed ephemeral private key, for known-answer tests only. */
  ephemeralForTestingOnly?: Uint8Array
}

/** One side of an NNpsk0 handshake. Each message may be written or read once, in turn. */
export class Handshake {
  private readonly ss = new SymmetricState(NOISE_PATTERN)
  private readonly e: { secret: Uint8Array, public: Uint8Array }
  private re: Uint8Array | null = null
  private step = 0

  constructor (private readonly options: HandshakeOptions) {
    if (options.psk.length !== 32) throw new NoiseError('the pre-shared key must be 32 bytes')
    const secret = options.ephemeralForTestingOnly ?? x25519.utils.randomSecretKey()
    this.e = { secret, public: x25519.getPublicKey(secret) }
    this.ss.mixHash(options.prologue)
  }

  /** Writes our next message (the first for the initiator, the second for the responder). */
  write (payload: Uint8Array): Uint8Array {
    this.expectTurn(true)
    const parts: Uint8Array[] = []
    if (this.step === 0) this.ss.mixKeyAndHash(this.options.psk)
    parts.push(this.e.public)
    this.ss.mixHash(this.e.public)
    // In a PSK handshake every `e` is also mixed into the key.
    this.ss.mixKey(this.e.public)
    if (this.step === 1) this.ss.mixKey(this.dh())
    parts.push(this.ss.encryptAndHash(payload))
    const message = concat(...parts)
    if (message.length > MAX_NOISE) throw new NoiseError('handshake message too large')
    this.step++
    return message
  }

  /** Reads the other side's next message and returns its payload; throws on a wrong key. */
  read (message: Uint8Array): Uint8Array {
    this.expectTurn(false)
    if (message.length > MAX_NOISE) throw new NoiseError('handshake message too large')
    if (message.length < DH_LEN + TAG_LEN) throw new NoiseError('handshake message too short')
    if (this.step === 0) this.ss.mixKeyAndHash(this.options.psk)
    const re = message.slice(0, DH_LEN)
    this.re = re
    this.ss.mixHash(re)
    this.ss.mixKey(re)
    if (this.step === 1) this.ss.mixKey(this.dh())
    const payload = this.ss.decryptAndHash(message.subarray(DH_LEN))
    this.step++
    return payload
  }

  /** The handshake hash so far (final once both messages are through). */
  get handshakeHash (): Uint8Array { return this.ss.h }

  /** The transport keys; only once both messages are through. */
  transport (): Transport {
    if (this.step !== 2) throw new NoiseError('the handshake is not finished')
    const [c1, c2] = this.ss.split()
    return this.options.initiator
      ? { send: c1, receive: c2, handshakeHash: this.ss.h }
      : { send: c2, receive: c1, handshakeHash: this.ss.h }
  }

  private dh (): Uint8Array {
    if (this.re === null) throw new NoiseError('no remote ephemeral key')
    try {
      // noble refuses a low-order remote key (an all-zero shared secret).
      return x25519.getSharedSecret(this.e.secret, this.re)
    } catch {
      throw new NoiseError('invalid remote ephemeral key')
    }
  }

  private expectTurn (writing: boolean): void {
    if (this.step > 1) throw new NoiseError('the handshake is finished')
    const ours = this.options.initiator ? this.step === 0 : this.step === 1
    if (ours !== writing) throw new NoiseError(writing ? 'not our turn to write' : 'not our turn to read')
  }
}
