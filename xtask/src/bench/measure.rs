//! What the benchmark reads from `/proc`: a target's CPU time (every
//! process of it, every thread of each), its peak resident set, and how busy
//! each core was during a run.

/// Linux reports `/proc` CPU times in USER_HZ ticks, fixed at 100 per
/// second by the kernel's ABI whatever the scheduler's tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// `pid` and its descendants (NGINX's workers, for instance).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|candidate| Some((candidate, stat_fields(candidate)?.get(1)?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![pid];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(all.iter().filter(|(_, ppid)| *ppid == parent).map(|(child, _)| *child));
        index += 1;
    }
    tree
}

/// Fields of `/proc/<pid>/stat` after the command name (state is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// User plus system CPU time of the processes (all their threads: a
/// process's `stat` sums them), in seconds.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let fields = stat_fields(*pid)?;
            // utime and stime are fields 14 and 15 of stat, 11 and 12 here.
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / TICKS_PER_SECOND)
        })
        .sum()
}

/// Sum of the processes' peak resident set (VmHWM), in bytes.
pub fn peak_rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .sum()
}

/// Each core's busy and total ticks since boot, from `/proc/stat`,
/// indexed by CPU number.
#[derive(Debug, Clone, Default)]
pub struct CoreTimes(Vec<(u64, u64)>);

impl CoreTimes {
    pub fn now() -> CoreTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        CoreTimes::parse(&text)
    }

    fn parse(text: &str) -> CoreTimes {
        let mut cores = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(index) = words.next().and_then(|name| name.strip_prefix("cpu")?.parse::<usize>().ok()) else {
                continue;
            };
            // user nice system idle iowait irq softirq steal (guest time is
            // already inside user and nice).
            let ticks: Vec<u64> = words.take(8).filter_map(|word| word.parse().ok()).collect();
            let total: u64 = ticks.iter().sum();
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            if cores.len() <= index {
                cores.resize(index + 1, (0, 0));
            }
            cores[index] = (total.saturating_sub(idle), total);
        }
        CoreTimes(cores)
    }

    /// Each core's busy share (0 to 1) between `earlier` and `self`.
    pub fn busy_since(&self, earlier: &CoreTimes) -> Vec<f64> {
        self.0
            .iter()
            .enumerate()
            .map(|(index, (busy, total))| {
                let (busy_before, total_before) = earlier.0.get(index).copied().unwrap_or((0, 0));
                let elapsed = total.saturating_sub(total_before);
                if elapsed == 0 {
                    0.0
                } else {
                    busy.saturating_sub(busy_before) as f64 / elapsed as f64
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_busy_shares_from_proc_stat() {
        let before = CoreTimes::parse(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 0 0 0 100 0 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0 0 0\nintr 1 2\n",
        );
        let after = CoreTimes::parse(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 60 0 30 110 0 0 0 0 0 0\ncpu1 10 0 0 180 10 0 0 0 0 0\nintr 1 2\n",
        );
        assert_eq!(after.busy_since(&before), vec![0.9, 0.1]);
    }

    #[test]
    fn this_process_is_its_own_tree_and_has_memory() {
        let me = std::process::id();
        assert!(process_tree(me).contains(&me));
        assert!(peak_rss_bytes(&[me]) > 0);
        assert!(cpu_seconds(&[me]) >= 0.0);
    }
}
