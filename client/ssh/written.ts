/** What both upload transports (cat-channel.ts, sftp-writer.ts) report, and how they blame the source. */

export interface Written {
  bytes: number;
  /** Hex sha256 of the bytes sent, computed while streaming. */
  sha256: string;
}

/** The source (tar, encryption) failed, not the remote side: its message must not be read as a remote one. */
export class SourceError extends Error {}
