/**
 * SPIFFE IDs as the SPIFFE-ID specification defines them: `spiffe://<trust domain>/<path>`,
 * trust domain of [a-z0-9._-], path segments of [A-Za-z0-9._-] that are neither empty, "." nor "..",
 * no port, user info, query or fragment.
 */

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

export class InvalidSpiffeIdError extends Error {
  constructor(value: string, why: string) {
    super(`invalid SPIFFE ID ${JSON.stringify(value)}: ${why}`);
    this.name = "InvalidSpiffeIdError";
  }
}

export class SpiffeId {
  private constructor(
    readonly trustDomain: string,
    /** "" for the trust domain itself, else "/seg/seg". */
    readonly path: string,
  ) {}

  static parse(value: string): SpiffeId {
    const prefix = "spiffe://";
    if (!value.startsWith(prefix)) throw new InvalidSpiffeIdError(value, "must start with spiffe://");
    const rest = value.slice(prefix.length);
    const slash = rest.indexOf("/");
    const td = slash < 0 ? rest : rest.slice(0, slash);
    const path = slash < 0 ? "" : rest.slice(slash);
    if (!TRUST_DOMAIN.test(td)) {
      throw new InvalidSpiffeIdError(
        value,
        "trust domain must be lower-case letters, digits, '.', '_' or '-'",
      );
    }
    if (path !== "") checkSegments(value, path.slice(1).split("/"));
    return new SpiffeId(td, path);
  }

  /** Builds an ID from already-separate segments; each is validated, none may contain '/'. */
  static of(trustDomain: string, ...segments: string[]): SpiffeId {
    const id = `spiffe://${trustDomain}${segments.map((s) => `/${s}`).join("")}`;
    if (!TRUST_DOMAIN.test(trustDomain)) throw new InvalidSpiffeIdError(id, "bad trust domain");
    checkSegments(id, segments);
    return new SpiffeId(trustDomain, segments.map((s) => `/${s}`).join(""));
  }

  get segments(): string[] {
    return this.path === "" ? [] : this.path.slice(1).split("/");
  }

  /** The ID with more segments appended (validated). */
  child(...segments: string[]): SpiffeId {
    return SpiffeId.of(this.trustDomain, ...this.segments, ...segments);
  }

  /** True when this ID is `other` or lies below it in the same trust domain. */
  isWithin(other: SpiffeId): boolean {
    return (
      this.trustDomain === other.trustDomain &&
      (this.path === other.path || this.path.startsWith(`${other.path}/`))
    );
  }

  equals(other: SpiffeId): boolean {
    return this.trustDomain === other.trustDomain && this.path === other.path;
  }

  toString(): string {
    return `spiffe://${this.trustDomain}${this.path}`;
  }
}

function checkSegments(value: string, segments: string[]): void {
  for (const s of segments) {
    if (s === "") throw new InvalidSpiffeIdError(value, "path has an empty segment (double or trailing '/')");
    if (s === "." || s === "..")
      throw new InvalidSpiffeIdError(value, "path segments may not be '.' or '..'");
    if (!SEGMENT.test(s)) {
      throw new InvalidSpiffeIdError(
        value,
        `path segment ${JSON.stringify(s)} may use only A-Z a-z 0-9 . _ -`,
      );
    }
  }
}
