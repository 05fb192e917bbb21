// What the benchmarks read of other processes from /proc.
import { readFileSync } from "node:fs";

// CPU seconds (user + system) the processes have used so far: fields 14 and 15 of
// /proc/<pid>/stat, in clock ticks of 1/100 s, so a phase's figure is good to ~10 ms per
// process. A shared process (a nats-server other runs also use) counts their work too.
export const cpuSeconds = (pids) =>
  pids.reduce((sum, pid) => {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return sum + (Number(f[11]) + Number(f[12])) / 100;
  }, 0);

// Resident memory of the processes, in KiB (VmRSS of /proc/<pid>/status).
export const rssKb = (pids) =>
  pids.reduce((sum, pid) => {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/);
    return sum + (m ? Number(m[1]) : 0);
  }, 0);
