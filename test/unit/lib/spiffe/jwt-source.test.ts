import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { JwtSource } from "../../../../lib/spiffe/jwt-source.js";
import { WorkloadClient } from "../../../../lib/spiffe/workload-client.js";
import { FakeStatus, FakeWorkloadApi, fakeJwt } from "./fake-workload-api.js";

describe("spiffe/jwt-source", () => {
  let fake: FakeWorkloadApi;
  let client: WorkloadClient;
  let now = 0;
  let calls = 0;
  beforeEach(async () => {
    fake = await FakeWorkloadApi.start();
    client = new WorkloadClient(fake.socket);
    now = 1_000_000_000_000;
    calls = 0;
    // Each token lives 100 s from the fake clock's now.
    fake.handlers.fetchJwtSvid = (req) => {
      calls++;
      return {
        svids: [
          {
            spiffe_id: "spiffe://example.org/w",
            svid: fakeJwt({ n: calls, aud: req.audience, exp: now / 1000 + 100 }),
            hint: "",
          },
        ],
      };
    };
  });
  afterEach(async () => {
    client.close();
    await fake.stop();
  });

  it("caches per audience until half the lifetime has passed", async () => {
    const src = new JwtSource(client, () => now);
    const [a, b] = await Promise.all([
      src.fetch({ audience: ["x", "y"] }),
      src.fetch({ audience: ["y", "x"] }),
    ]);
    assert.equal(calls, 1, "concurrent requests for one audience set share a fetch");
    assert.equal(a?.token, b?.token);
    await src.fetch({ audience: ["z"] });
    assert.equal(calls, 2, "another audience is another token");
    now += 49_000;
    assert.equal((await src.fetch({ audience: ["x", "y"] })).token, a.token);
    assert.equal(calls, 2);
    now += 2_000;
    assert.notEqual((await src.fetch({ audience: ["x", "y"] })).token, a.token);
    assert.equal(calls, 3);
  });

  it("does not cache failures", async () => {
    const src = new JwtSource(client, () => now);
    const ok = fake.handlers.fetchJwtSvid;
    fake.handlers.fetchJwtSvid = () => {
      throw new FakeStatus(grpc.status.PERMISSION_DENIED, "no identity issued");
    };
    await assert.rejects(src.fetch({ audience: ["x"] }), /no identity issued/);
    fake.handlers.fetchJwtSvid = ok;
    assert.equal((await src.fetch({ audience: ["x"] })).spiffeId.toString(), "spiffe://example.org/w");
  });
});
