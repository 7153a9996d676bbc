//! popscan: the compliance scanner. The scan path is one direction:
//! inventory → evidence (live probes, nmap XML) → checks → verdicts → reports.

pub mod evidence;
pub mod nmap;
pub mod probe;
