/**
 * SFTP status codes (draft-ietf-secsh-filexfer-02, what OpenSSH's sftp-server speaks) turned into the
 * one-line messages users see. ssh2 reports them as an Error with a numeric `code`.
 */

export const SFTP_STATUS = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;

/** The numeric SFTP status of an ssh2 error, if it carries one. */
export function sftpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

/** Whether an ssh2 error is "no such file". */
export function isNoSuchFile(err: unknown): boolean {
  return sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE;
}

/** The error's own message, without the stack, for the tail of a one-line error. */
export function shortMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
