//! popscan: the compliance scanner. The scan path is one direction:
//! inventory → evidence (live probes, nmap XML) → checks → verdicts → reports.

pub mod checks;
pub mod evidence;
pub mod inventory;
pub mod nmap;
pub mod nmap_run;
pub mod policy;
pub mod probe;
pub mod report;
pub mod scan;
pub mod verdict;
pub mod waiver;
