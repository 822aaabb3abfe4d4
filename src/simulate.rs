//! Simulated cluster and traffic in virtual time, driving the real engine and judge.
