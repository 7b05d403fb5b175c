/**
 * The artifact's OpenPGP message, written incrementally: SKESK v4 (the passphrase, iterated+salted
 * S2K, wrapping a fresh AES-256 session key) + SEIPD v1 (AES-256-CFB, MDC) holding one binary literal
 * data packet, both of streaming length (partial body lengths). RFC 4880 §5.3, §5.9, §5.13, §5.14;
 * this is what `gpg --symmetric --cipher-algo AES256 --compress-algo none` writes, and GnuPG 2.2 (the
 * compute nodes') reads it; AEAD packets (RFC 9580) it cannot.
 *
 * Why not openpgp.js's streaming encrypt: it costs ~9.5 s of CPU per GiB here (web-stream stages, a
 * copy per framing layer, the garbage they leave) against ~4.4 s for the same AES-256-CFB and SHA-1
 * done directly with node:crypto — the difference decides whether data-prep keeps up with
 * `tar | gpg | ssh`. This file only frames bytes and runs those two primitives over them; the SKESK
 * packet is skesk.ts. Decryption (decrypt-stream.ts) stays with openpgp.js, and the tests decrypt our
 * output with both it and GnuPG.
 *
 * Synchronous, no streams: the same object serves the Node Transform on the calling thread
 * (encrypt-stream.ts) and the worker (encrypt-worker-main.ts).
 */

import { createCipheriv, createHash, randomBytes, type Cipher, type Hash } from "node:crypto";
import type { ArtifactSecret } from "./secret.js";
import { skeskPacket } from "./skesk.js";

/**
 * Partial body chunk: 2^18 bytes (a partial length must be a power of two, the first ≥ 512). Each
 * framing layer holds back up to two chunks, so smaller keeps memory down; the header it costs is one
 * byte per chunk.
 */
const PARTIAL_LOG2 = 18;
const PARTIAL = 2 ** PARTIAL_LOG2;
const AES_BLOCK = 16;
/** Below this, pieces are glued together before encryption (see coalesce). */
const SMALL_PIECE = 64 * 1024;
const TAG_LITERAL = 11;
const TAG_SEIPD = 18;
/** MDC packet header (new format, tag 19, length 20): hashed along with the plaintext. */
const MDC_HEADER = Buffer.from([0xc0 | 19, 20]);

export class PgpMessageWriter {
  readonly #cipher: Cipher;
  readonly #mdc: Hash = createHash("sha1");
  /** Plaintext not yet framed into the literal packet: held back until more than one chunk is known. */
  readonly #literal = new PendingBytes();
  /** Ciphertext not yet framed into the SEIPD packet, likewise. */
  readonly #sealed = new PendingBytes();
  #out: Buffer[] = [];
  #finished = false;

  private constructor(skesk: Buffer, sessionKey: Buffer) {
    // OpenPGP CFB (RFC 4880 §13.9 without resynchronisation, as SEIPD requires) is plain CFB-128 with
    // a zero IV; the random prefix below plays the IV's role.
    this.#cipher = createCipheriv("aes-256-cfb", sessionKey, Buffer.alloc(AES_BLOCK));
    sessionKey.fill(0);
    this.#out.push(skesk, Buffer.from([0xc0 | TAG_SEIPD]));
    this.#sealed.push(Buffer.from([1])); // SEIPD version 1
    const prefix = randomBytes(AES_BLOCK + 2);
    prefix.copy(prefix, AES_BLOCK, AES_BLOCK - 2, AES_BLOCK); // the last two bytes repeated (quick check)
    this.#encrypt(prefix);
    this.#encrypt(Buffer.from([0xc0 | TAG_LITERAL]));
    const literalHeader = Buffer.alloc(6);
    literalHeader[0] = 0x62; // 'b': binary
    literalHeader[1] = 0; // no file name
    literalHeader.writeUInt32BE(Math.floor(Date.now() / 1000), 2);
    this.#literal.push(literalHeader);
  }

  /** A writer for one message under `secret`: a fresh session key; the S2K (~15 ms) runs here. */
  static create(secret: ArtifactSecret): PgpMessageWriter {
    const sessionKey = randomBytes(32);
    return new PgpMessageWriter(skeskPacket(secret.passphrase(), sessionKey), sessionKey);
  }

  /** Takes plaintext; returns the ciphertext it completed (often none: chunks go out 256 KiB at a time). */
  update(plaintext: Uint8Array): Buffer[] {
    if (this.#finished) throw new Error("pgp message writer: update after final");
    this.#literal.push(plaintext);
    // Strictly more than one chunk: the last chunk must carry a definite length, so a full chunk is
    // framed as partial only once it is known not to be the last.
    while (this.#literal.length > PARTIAL) {
      this.#encrypt(Buffer.from([0xe0 | PARTIAL_LOG2]));
      for (const piece of coalesce(this.#literal.take(PARTIAL))) this.#encrypt(piece);
    }
    return this.#drain();
  }

  /** Ends the message: the last literal chunk, the MDC, the last SEIPD chunk. */
  final(): Buffer[] {
    if (this.#finished) throw new Error("pgp message writer: final called twice");
    this.#finished = true;
    this.#encrypt(definiteLength(this.#literal.length));
    for (const piece of coalesce(this.#literal.take(this.#literal.length))) this.#encrypt(piece);
    this.#encrypt(MDC_HEADER);
    this.#sealed.push(this.#cipher.update(this.#mdc.digest()));
    this.#sealed.push(this.#cipher.final());
    this.#frameSealed();
    this.#out.push(definiteLength(this.#sealed.length), ...this.#sealed.take(this.#sealed.length));
    return this.#drain();
  }

  /** Hashes (MDC covers everything encrypted before it) and encrypts one piece of the SEIPD payload. */
  #encrypt(bytes: Uint8Array): void {
    this.#mdc.update(bytes);
    this.#sealed.push(this.#cipher.update(bytes));
  }

  #frameSealed(): void {
    while (this.#sealed.length > PARTIAL) {
      this.#out.push(Buffer.from([0xe0 | PARTIAL_LOG2]), ...this.#sealed.take(PARTIAL));
    }
  }

  #drain(): Buffer[] {
    this.#frameSealed();
    const out = this.#out;
    this.#out = [];
    return out;
  }
}

/** A queue of byte pieces from which exact lengths are taken as views (no copy). */
class PendingBytes {
  #pieces: (Uint8Array | undefined)[] = [];
  /**
   * Index of the first piece still queued: an index rather than shift(), so that many tiny pieces
   * stay O(1) each. Taken slots are cleared at once (nothing consumed stays referenced) and the array
   * is compacted once mostly empty.
   */
  #head = 0;
  length = 0;

  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#pieces.push(bytes);
    this.length += bytes.length;
  }

  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    this.length -= n;
    while (n > 0) {
      const head = this.#pieces[this.#head] as Uint8Array;
      const part = head.length <= n ? head : head.subarray(0, n);
      out.push(Buffer.from(part.buffer, part.byteOffset, part.length));
      n -= part.length;
      if (part === head) this.#pieces[this.#head++] = undefined;
      else this.#pieces[this.#head] = head.subarray(part.length);
    }
    if (this.#head >= 64 && this.#head * 2 >= this.#pieces.length) {
      this.#pieces = this.#pieces.slice(this.#head);
      this.#head = 0;
    }
    return out;
  }
}

/**
 * Runs of small pieces (tar headers, small files) glued into one buffer, so that the cipher and the
 * hash see few large calls; large pieces go through as they are, uncopied.
 */
function coalesce(pieces: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let run: Buffer[] = [];
  let runLength = 0;
  const flush = (): void => {
    if (run.length > 0) out.push(run.length === 1 ? (run[0] as Buffer) : Buffer.concat(run, runLength));
    run = [];
    runLength = 0;
  };
  for (const piece of pieces) {
    if (piece.length >= SMALL_PIECE) {
      flush();
      out.push(piece);
    } else {
      run.push(piece);
      runLength += piece.length;
    }
  }
  flush();
  return out;
}

/** New-format definite body length (RFC 4880 §4.2.2.1–3). */
function definiteLength(n: number): Buffer {
  if (n < 192) return Buffer.from([n]);
  if (n < 8384) return Buffer.from([((n - 192) >> 8) + 192, (n - 192) & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xff;
  b.writeUInt32BE(n, 1);
  return b;
}
