/**
 * Strict patterns for every name that reaches a shell, a SPIRE selector or a Vault path.
 * A value either matches exactly or is refused with one line naming the field and the fix;
 * nothing is escaped or "cleaned up", so what is validated is what is used.
 */

export type NameKind = "user" | "group" | "node" | "secret" | "client";

interface Rule {
  pattern: RegExp;
  hint: string;
}

const LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";

const RULES: Record<NameKind, Rule> = {
  // POSIX portable user/group names, as useradd accepts them by default.
  user: {
    pattern: /^[a-z_][a-z0-9_-]{0,31}$/,
    hint: "lower-case letters, digits, '_' or '-', at most 32, e.g. alice",
  },
  group: {
    pattern: /^[a-z_][a-z0-9_-]{0,31}$/,
    hint: "lower-case letters, digits, '_' or '-', at most 32, e.g. proj-a",
  },
  // A host name: DNS labels, as Slurm and `hostname` report them.
  node: {
    pattern: new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*$`),
    hint: "a lower-case host name of DNS labels, e.g. nid001234",
  },
  secret: {
    pattern: /^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,127}$/,
    hint: "letters, digits, '.', '_' or '-' (no '..'), starting with a letter or digit, at most 128, e.g. dataset-1",
  },
  // Ends in a letter or digit: it becomes part of Vault role names, which must.
  client: {
    pattern: /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/,
    hint: "lower-case letters, digits or '-' (not at either end), at most 63, e.g. lab-42",
  },
};

export class InvalidNameError extends Error {
  constructor(
    readonly kind: NameKind,
    readonly value: string,
  ) {
    super(`invalid ${kind} name ${JSON.stringify(value)}: use ${RULES[kind].hint}`);
    this.name = "InvalidNameError";
  }
}

export function isValidName(kind: NameKind, value: string): boolean {
  return RULES[kind].pattern.test(value);
}

/** Returns value unchanged if it is a valid `kind` name, else throws InvalidNameError. */
export function validateName(kind: NameKind, value: string): string {
  if (!isValidName(kind, value)) throw new InvalidNameError(kind, value);
  return value;
}
