"""Data: where images come from (sources), how they are paired (pairing), the pair-shard format
(shards), building shard sets (build), a shard set's locations and manifest (shardset: the one
manifest reader), tar members grouped by sample key (tars), decoding (images), and the process
pool they share (parallel). `shards` and `sources` never import each other; `build` joins them."""
