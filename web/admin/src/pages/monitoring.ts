// Live monitoring fed by the server stream WatchMonitoring: cluster charts (instances,
// devices, message rate, queues, CPU, memory) and one row per instance. The stream ends when
// the page is left (AbortSignal) or the server ends it (token expiry, revocation, shutdown):
// the error is shown and the page reconnects on demand.

import { expired, renewSession, type Clients } from "../api.js";
import { clearError, showError } from "../errors.js";
import { el, errorBox, table, time } from "../dom.js";
import { LineChart } from "../chart.js";
import { MonitoredResource, type MonitoringSnapshot } from "../gen/guardyn/admin/v1/monitoring_pb.js";

const mib = (b: bigint | number) => `${(Number(b) / 1048576).toFixed(0)} MiB`;
const pct = (v: number) => `${v.toFixed(1)} %`;
const count = (v: number) => String(Math.round(v));
const rate = (v: number) => `${v.toFixed(v < 10 ? 2 : 0)}/s`;

export function monitoringPage(clients: Clients, signal: AbortSignal): HTMLElement {
  const error = errorBox();
  const stateLine = el("p", { id: "stream-state", role: "status" }, "connecting…");
  const charts = {
    instances: new LineChart("instances", "Instances", count),
    devices: new LineChart("devices", "Connected devices", count),
    messages: new LineChart("messages", "Messages sent", rate),
    queues: new LineChart("queues", "Queue depth (total)", count),
    cpu: new LineChart("cpu", "CPU (mean)", pct),
    memory: new LineChart("memory", "Memory used", pct),
    rss: new LineChart("rss", "Process RSS", (v) => mib(v)),
  };
  const instances = el("div", { id: "instances" });
  const alerts = el("div", { id: "alerts" });
  const reconnect = el("button", { id: "reconnect" }, "Reconnect");
  reconnect.hidden = true;

  const show = (s: MonitoringSnapshot) => {
    const c = s.cluster;
    charts.instances.push(c?.instances ?? 0);
    charts.devices.push(Number(c?.connectedDevices ?? 0n));
    charts.messages.push(c?.messagesSentPerSec ?? 0);
    charts.queues.push((c?.queueDepths ?? []).reduce((sum, q) => sum + Number(q.depth), 0));
    charts.cpu.push(c?.cpuPercentMean ?? 0);
    const total = Number(c?.memoryTotalBytes ?? 0n);
    charts.memory.push(total > 0 ? (100 * Number(c?.memoryUsedBytes ?? 0n)) / total : 0);
    charts.rss.push(Number(c?.processRssBytes ?? 0n));
    stateLine.textContent = `live · snapshot ${time(s.takenAt)}`;
    instances.replaceChildren(
      table(
        ["Instance", "Version", "Services", "Uptime", "CPU", "RSS", "Devices", "Streams", "Messages", "Queues", "Reported"],
        s.instances.map((i) => [
          el("code", { class: "instance-id" }, i.instanceId),
          i.version,
          i.services.join(","),
          `${i.uptimeSecs}s`,
          pct(i.cpuPercent),
          mib(i.processRssBytes),
          String(i.connectedDevices),
          String(i.openStreams),
          rate(i.messagesSentPerSec),
          i.queueDepths.map((q) => `${q.queue}=${q.depth}`).join(" "),
          time(i.reportedAt),
        ]),
      ),
    );
    alerts.replaceChildren(
      ...s.alerts.map((a) =>
        el("p", { class: "badge bad" }, `ALERT ${a.instanceId} ${MonitoredResource[a.resource].toLowerCase()}: ${a.valuePercent.toFixed(1)} % above ${a.thresholdPercent} %`),
      ),
    );
  };

  const watch = async () => {
    clearError(error);
    reconnect.hidden = true;
    stateLine.textContent = "connecting…";
    try {
      for await (const res of clients.monitoring.watchMonitoring({ intervalSecs: 1 }, { signal })) {
        if (res.snapshot) show(res.snapshot);
      }
      stateLine.textContent = "stream ended";
    } catch (err: unknown) {
      if (signal.aborted) return;
      // The stream ends when its access token does: renew and watch on.
      if (expired(err)) {
        try {
          await renewSession();
          void watch();
          return;
        } catch (renewErr: unknown) {
          err = renewErr;
        }
      }
      stateLine.textContent = "stream failed";
      showError(error, err);
    }
    reconnect.hidden = false;
  };
  reconnect.addEventListener("click", () => void watch());
  void watch();

  return el(
    "section",
    { id: "monitoring-page" },
    el("h1", {}, "Monitoring"),
    el("div", { class: "toolbar" }, stateLine, reconnect),
    error,
    alerts,
    el("div", { class: "charts" }, ...Object.values(charts).map((c) => c.element)),
    instances,
  );
}
