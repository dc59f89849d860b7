//! nftables end to end.
