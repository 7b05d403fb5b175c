/**
 * What the client tools' exit status means, so scripts can tell "fix your command" from "try again".
 * 130/143 follow the shell's 128 + signal convention.
 */
export const EXIT = {
  ok: 0,
  /** A step failed at run time (server, Vault, SSH, disk); what it had done was undone. */
  failed: 1,
  /** Bad flags or configuration; nothing was created. */
  usage: 2,
  interrupted: 130,
  terminated: 143,
} as const;
