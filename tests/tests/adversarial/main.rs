//! The adversarial suite (#19): bad or hostile input to every stage, damaged and concurrent run
//! directories, kills at any point. Every refusal exits 2 with a message naming the fault and
//! leaves the run byte-identical (lock files aside); a killed stage resumes to the result of an
//! uninterrupted one; two writers never leave a mixed run marked complete.

mod concurrency;
mod flags;
mod harness;
mod inputs;
mod kill_resume;
mod runs;
