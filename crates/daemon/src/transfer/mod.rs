//! File transfer (`/loopsy/transfer/1`). For now, the part everything else rests on: keeping
//! the paths a peer names inside their roots ([`confine`]).

pub mod confine;
