//! End-to-end, per shipped scenario: it can be won by the operator's fix, and it cannot be won
//! by doing nothing or by a wrong fix.
