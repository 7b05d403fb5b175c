import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { parseServerConfig } from "../../../lib/config/server-config.js";
import { run, runOk } from "../../support/exec.js";
import { loadStackEnv } from "../../support/stack-env.js";

// From dist/test/integration/deploy/: four levels up is the repository root.
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const CHART = join(ROOT, "k8s/hpcs-stack");
const CUSTOM_VALUES = join(CHART, "ci/custom-values.yaml");

/* eslint-disable @typescript-eslint/no-explicit-any -- rendered Kubernetes manifests are untyped YAML */
type Manifest = Record<string, any>;

interface Rendered {
  all: Manifest[];
  get(kind: string, name: string): Manifest;
}

function rendered(text: string): Rendered {
  const all = parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`rendered YAML: ${d.errors[0]?.message}`);
      return d.toJS() as Manifest | null;
    })
    .filter((m): m is Manifest => m !== null);
  return {
    all,
    get(kind, name) {
      const m = all.find((x) => x.kind === kind && x.metadata?.name === name);
      if (!m) throw new Error(`no ${kind}/${name} in the rendered chart`);
      return m;
    },
  };
}

function podSpecs(r: Rendered): { owner: string; annotations: Record<string, string>; spec: Manifest }[] {
  return r.all
    .filter((m) => ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(m.kind))
    .map((m) => ({
      owner: `${m.kind}/${m.metadata.name}`,
      annotations: m.spec.template.metadata?.annotations ?? {},
      spec: m.spec.template.spec,
    }));
}

function container(pod: Manifest, name: string): Manifest {
  const c = [...(pod.containers ?? []), ...(pod.initContainers ?? [])].find((x: Manifest) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

function mountOf(c: Manifest, volume: string): Manifest {
  const m = (c.volumeMounts ?? []).find((v: Manifest) => v.name === volume);
  if (!m) throw new Error(`container ${c.name} does not mount volume ${volume}`);
  return m;
}

function volumeOf(pod: Manifest, name: string): Manifest {
  const v = (pod.volumes ?? []).find((x: Manifest) => x.name === name);
  if (!v) throw new Error(`no volume ${name}`);
  return v;
}

/** The SPIRE release the bench builds: the chart's images must be the same. */
function benchSpireVersion(): string {
  const m = /github\.com\/spiffe\/spire v(\S+)/.exec(
    readFileSync(join(ROOT, "stack/go/spire/go.mod"), "utf8"),
  );
  if (!m?.[1]) throw new Error("no spire version in stack/go/spire/go.mod");
  return m[1];
}

// helm v3 from the Go module proxy (stack/go/helm), lint + template; assertions on the rendered
// manifests; the rendered SPIRE and hpcs server configurations are checked by the real programs'
// own validators (spire-server/spire-agent validate, lib/config's server.ini parser).
describe("k8s/hpcs-stack Helm chart", function () {
  this.timeout(120_000);
  const env = loadStackEnv();
  const helm = env.tools.helm ?? join(env.bin_dir, "helm");
  let dir = "";
  let byDefault: Rendered;
  let custom: Rendered;
  let certArgs: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hpcs-helm-"));
    // Any PEM pair will do for rendering; the bench's are at hand.
    certArgs = [
      "--set-file",
      `hpcs-server.tls.cert=${env.tls.cert},hpcs-server.tls.key=${env.tls.key}`,
      "--set-file",
      `spire.oidc.tls.cert=${env.tls.cert},spire.oidc.tls.key=${env.tls.key}`,
      "--set-file",
      `hpcs-server.vault.caCert=${env.ca_cert}`,
    ];
    byDefault = rendered(await runOk(helm, ["template", "hpcs-stack", CHART, "--namespace", "hpcs"]));
    custom = rendered(
      await runOk(helm, [
        "template",
        "hpcs-stack",
        CHART,
        "--namespace",
        "hpcs-prod",
        "-f",
        CUSTOM_VALUES,
        ...certArgs,
      ]),
    );
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("passes helm lint --strict with the default and with custom values", async () => {
    for (const args of [[], ["-f", CUSTOM_VALUES, ...certArgs]]) {
      const r = await run(helm, ["lint", "--strict", CHART, ...args]);
      assert.equal(r.code, 0, `helm lint --strict ${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  it("hardens every container: securityContext, resources, probes, pinned images", () => {
    const spire = benchSpireVersion();
    for (const r of [byDefault, custom]) {
      const pods = podSpecs(r);
      assert.deepEqual(pods.map((p) => p.owner).sort(), [
        "Deployment/hpcs-server",
        "StatefulSet/spire-server",
      ]);
      for (const { owner, annotations, spec } of pods) {
        const rootOk = (annotations["hpcs-stack/root-containers"] ?? "").split(/[\s,]+/).filter(Boolean);
        assert.ok(rootOk.length === 0 || annotations["hpcs-stack/root-containers-why"], `${owner}: say why`);
        const regular: Manifest[] = spec.containers;
        for (const c of [...regular, ...(spec.initContainers ?? [])]) {
          const where = `${owner} container ${c.name}`;
          const sc = c.securityContext ?? {};
          assert.equal(sc.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`);
          assert.equal(sc.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`);
          assert.ok(sc.capabilities?.drop?.includes("ALL"), `${where}: capabilities.drop ALL`);
          if (rootOk.includes(c.name)) {
            assert.ok(!regular.includes(c), `${where}: only an init container may run as root`);
            assert.deepEqual(sc.capabilities.add, ["CHOWN", "FOWNER"], `${where}: no other capability`);
          } else {
            assert.equal(sc.runAsNonRoot, true, `${where}: runAsNonRoot`);
            assert.ok(
              Number(sc.runAsUser ?? spec.securityContext?.runAsUser) > 0,
              `${where}: a non-zero uid`,
            );
          }
          for (const k of ["requests", "limits"]) {
            assert.ok(c.resources?.[k]?.cpu && c.resources?.[k]?.memory, `${where}: resources.${k}`);
          }
          assert.match(c.image, /^[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$/, `${where}: image ${c.image}`);
          assert.doesNotMatch(c.image, /:latest$/, `${where}: not :latest`);
          if (c.image.startsWith("ghcr.io/spiffe/") && !c.image.includes("@")) {
            assert.ok(c.image.endsWith(`:${spire}`), `${where}: ${c.image} is the bench's SPIRE ${spire}`);
          }
        }
        for (const c of regular) {
          assert.ok(c.livenessProbe, `${owner} container ${c.name}: livenessProbe`);
          assert.ok(c.readinessProbe, `${owner} container ${c.name}: readinessProbe`);
        }
      }
    }
    const spireImage = container(
      custom.get("StatefulSet", "spire-server").spec.template.spec,
      "spire-server",
    ).image;
    assert.equal(spireImage, `ghcr.io/spiffe/spire-server@sha256:${"0".repeat(63)}1`);
  });

  it("gives the server its INI ConfigMap, its agent's socket and the SPIRE admin socket", () => {
    for (const r of [byDefault, custom]) {
      const pod = r.get("Deployment", "hpcs-server").spec.template.spec;
      const server = container(pod, "hpcs-server");
      const agent = container(pod, "spire-agent");
      assert.deepEqual(server.args.slice(0, 3), ["serve", "--config", "/etc/hpcs/server.ini"]);
      assert.equal(volumeOf(pod, "config").configMap.name, "hpcs-server");
      const ini = mountOf(server, "config");
      assert.deepEqual(
        [ini.mountPath, ini.subPath, ini.readOnly],
        ["/etc/hpcs/server.ini", "server.ini", true],
      );
      const cfg = parseServerConfig(r.get("ConfigMap", "hpcs-server").data["server.ini"], "server.ini");

      // The agent's Workload API socket: one in-memory volume, written by the agent, read by the server.
      assert.equal(volumeOf(pod, "agent-socket").emptyDir.medium, "Memory");
      const sock = mountOf(server, "agent-socket");
      assert.equal(sock.readOnly, true);
      assert.equal(cfg.spireAgent.socketPath, `${sock.mountPath}/api.sock`);
      assert.equal(mountOf(agent, "agent-socket").mountPath, sock.mountPath);
      const agentConf: string = r.get("ConfigMap", "hpcs-server").data["agent.conf"];
      assert.ok(agentConf.includes(`socket_path = "${sock.mountPath}/api.sock"`));
      assert.equal(pod.shareProcessNamespace, true, "the unix attestor sees the server's process");
      const token = volumeOf(pod, "agent-token").projected.sources[0].serviceAccountToken;
      assert.equal(token.audience, "spire-server");

      // The SPIRE admin socket: the node directory the spire pod shares, on the spire pod's node.
      const spirePod = r.get("StatefulSet", "spire-server").spec.template.spec;
      assert.equal(
        volumeOf(pod, "server-socket").hostPath.path,
        volumeOf(spirePod, "server-socket").hostPath.path,
      );
      assert.equal(cfg.spireServer.socketPath, `${mountOf(server, "server-socket").mountPath}/api.sock`);
      const affinity = pod.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0];
      assert.deepEqual(affinity.labelSelector.matchLabels, { app: "spire-server" });
      assert.equal(affinity.topologyKey, "kubernetes.io/hostname");
      assert.ok(
        pod.securityContext.supplementalGroups.includes(
          container(spirePod, "spire-server").securityContext.runAsGroup,
        ),
      );

      const tls = volumeOf(pod, "tls").secret.secretName;
      assert.equal(cfg.hpcsServer.tls?.certFile, `${mountOf(server, "tls").mountPath}/tls.crt`);
      assert.equal(tls, "hpcs-server-tls");
    }
    const defaults = parseServerConfig(
      byDefault.get("ConfigMap", "hpcs-server").data["server.ini"],
      "server.ini",
    );
    assert.equal(defaults.vault.url, "http://vault:8200");
    assert.equal(defaults.spireServer.trustDomain, "hpcs");
    assert.equal(defaults.hpcsServer.nodeAttestation, "operator");
    const site = parseServerConfig(custom.get("ConfigMap", "hpcs-server").data["server.ini"], "server.ini");
    assert.equal(site.vault.url, "https://vault.example.org:8200");
    assert.equal(site.vault.serverRole, "hpcs-server-prod");
    assert.equal(site.vault.caFile, "/etc/hpcs/vault-ca/ca.pem");
    assert.equal(site.spireServer.trustDomain, "example.org");
    assert.equal(site.hpcsServer.agentModel, "site");
    assert.deepEqual(site.hpcsServer.clientSelectors, [{ type: "unix", value: "uid:1000" }]);
    const sitePod = custom.get("Deployment", "hpcs-server").spec.template.spec;
    assert.equal(
      sitePod.containers[0].volumeMounts.find((m: Manifest) => m.mountPath === site.vault.caFile)?.subPath,
      "vault-ca.pem",
    );
    assert.equal(custom.get("Secret", "hpcs-server-tls").type, "kubernetes.io/tls");
    assert.equal(custom.get("Secret", "spire-oidc-tls").type, "kubernetes.io/tls");
    assert.ok(
      !byDefault.all.some((m) => m.kind === "Secret"),
      "by default the TLS Secrets are the operator's",
    );
  });

  it("exposes the original's services: spire-server 8081, spire-oidc 443, hpcs-server 10080", () => {
    for (const r of [byDefault, custom]) {
      const ports = (name: string) =>
        r.get("Service", name).spec.ports.map((p: Manifest) => [p.name, p.port, p.targetPort]);
      assert.deepEqual(ports("spire-server"), [["tcp-spire", 8081, "spire-server"]]);
      assert.deepEqual(ports("spire-oidc"), [["https", 443, "spire-oidc"]]);
      assert.deepEqual(ports("hpcs-server"), [
        ["https", 10080, "https"],
        ["grpc", 10081, "grpc"],
      ]);
      // Every named targetPort is a port of a container of the pods the Service selects.
      for (const svc of r.all.filter((m) => m.kind === "Service")) {
        const owner = podSpecs(r).find(
          (p) =>
            r.all.find((m) => `${m.kind}/${m.metadata.name}` === p.owner)?.spec.template.metadata.labels
              .app === svc.spec.selector.app,
        );
        assert.ok(owner, `Service ${svc.metadata.name} selects a pod`);
        const named = owner.spec.containers.flatMap((c: Manifest) =>
          (c.ports ?? []).map((p: Manifest) => p.name),
        );
        for (const p of svc.spec.ports)
          assert.ok(named.includes(p.targetPort), `${svc.metadata.name}: ${p.targetPort}`);
      }
    }
    assert.equal(custom.get("Service", "spire-server").spec.type, "NodePort");
    assert.equal(custom.get("Service", "spire-server").spec.ports[0].nodePort, 30081);
    assert.deepEqual(
      custom.get("Service", "hpcs-server").spec.ports.map((p: Manifest) => p.nodePort),
      [30080, 30082],
    );
  });

  it("renders SPIRE configurations that spire-server and spire-agent validate", async () => {
    for (const [label, r] of [
      ["default", byDefault],
      ["custom", custom],
    ] as const) {
      const spireCm = r.get("ConfigMap", "spire-server").data;
      const serverConf = join(dir, `${label}-server.conf`);
      const agentConf = join(dir, `${label}-agent.conf`);
      await writeFile(serverConf, spireCm["server.conf"]);
      await writeFile(agentConf, r.get("ConfigMap", "hpcs-server").data["agent.conf"]);
      assert.match(await runOk(env.spire.server_bin, ["validate", "-config", serverConf]), /valid/);
      assert.match(await runOk(env.spire.agent_bin, ["validate", "-config", agentConf]), /valid/);
      // The issuer Vault is bound to is the one the OIDC provider serves.
      const issuer = /jwt_issuer = "([^"]+)"/.exec(spireCm["server.conf"])?.[1];
      assert.ok(issuer && spireCm["oidc-discovery-provider.conf"].includes(`jwt_issuer = "${issuer}"`));
    }
    assert.match(
      custom.get("ConfigMap", "spire-server").data["server.conf"],
      /"utility" = \{\s*service_account_allow_list = \["hpcs-prod:hpcs-server"\]/,
    );
  });

  it("matches the ansible bootstrap role's defaults (server uid, agent service account)", () => {
    const defaults = parseYaml(
      readFileSync(join(ROOT, "ansible/roles/hpcs_bootstrap/defaults/main.yaml"), "utf8"),
    ) as Record<string, unknown>;
    const pod = byDefault.get("Deployment", "hpcs-server").spec.template.spec;
    const uid = container(pod, "hpcs-server").securityContext.runAsUser;
    assert.deepEqual(defaults.hpcs_bootstrap_server_selectors, [`unix:uid:${uid}`]);
    assert.ok(
      (defaults.hpcs_bootstrap_agent_selectors as string[]).includes(
        `k8s_psat:agent_sa:${pod.serviceAccountName}`,
      ),
    );
    assert.equal(defaults.hpcs_bootstrap_server_role, "hpcs-server");

    // deploy-all.yaml reaches SPIRE through `kubectl exec` into the chart's pod, container and socket.
    const plays = parseYaml(readFileSync(join(ROOT, "ansible/deploy-all.yaml"), "utf8")) as Manifest[];
    const role = plays.flatMap((p) => p.roles ?? []).find((r: Manifest) => r.role === "hpcs_bootstrap");
    const cmd: string[] = role.vars.hpcs_bootstrap_spire_server_cmd;
    const sts = byDefault.get("StatefulSet", "spire-server");
    assert.equal(cmd[cmd.indexOf("exec") + 3], `${sts.metadata.name}-0`);
    assert.equal(cmd[cmd.indexOf("-c") + 1], "spire-server");
    assert.ok(container(sts.spec.template.spec, cmd[cmd.indexOf("-c") + 1] as string));
    const socket = /socket_path = "([^"]+)"/.exec(
      byDefault.get("ConfigMap", "spire-server").data["server.conf"],
    );
    assert.equal(role.vars.hpcs_bootstrap_spire_socket, socket?.[1]);
    assert.deepEqual(
      role.vars.hpcs_bootstrap_agent_selectors.at(-1),
      `k8s_psat:agent_sa:${pod.serviceAccountName}`,
    );
  });

  it("refuses to render without a Vault URL, or a TLS Secret to create without its PEM", async () => {
    const noVault = await run(helm, ["template", "x", CHART, "--set", "hpcs-server.vault.url="]);
    assert.notEqual(noVault.code, 0);
    assert.match(noVault.stderr, /hpcs-server\.vault\.url is required/);
    const noPem = await run(helm, ["template", "x", CHART, "--set", "spire.oidc.tls.create=true"]);
    assert.notEqual(noPem.code, 0);
    assert.match(noPem.stderr, /spire\.oidc\.tls\.cert \(PEM\) is required/);
  });
});
