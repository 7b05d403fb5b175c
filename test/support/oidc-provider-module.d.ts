// The part of the `oidc-provider` package (no bundled types) that test/support/oidc-provider.ts uses.
declare module "oidc-provider" {
  import type { IncomingMessage, ServerResponse } from "node:http";

  interface ModelInstance {
    save(): Promise<string>;
    [key: string]: unknown;
  }
  interface GrantInstance extends ModelInstance {
    addOIDCScope(scope: string): void;
  }
  interface DeviceCodeInstance extends ModelInstance {
    clientId: string;
  }

  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    proxy: boolean;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    Grant: new (init: { accountId: string; clientId: string }) => GrantInstance;
    DeviceCode: { findByUserCode(userCode: string): Promise<DeviceCodeInstance | undefined> };
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
}
