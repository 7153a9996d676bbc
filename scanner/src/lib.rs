//! popscan: the compliance scanner. The scan path is one direction:
//! inventory → evidence (live probes, nmap XML) → checks → verdicts → reports.

pub mod checks;
pub mod evidence;
pub mod inventory;
pub mod policy;
pub mod probe;
pub mod waiver;
pub mod yaml;
pub mod nmap;
pub mod report;
pub mod scan;
pub mod verdict;
pub mod nmap_run;
