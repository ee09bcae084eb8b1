"""Operations on a finished run directory, after its units are done and without Ray: the labels
pass (labels: k-NN labels of every match and perturb row against a bank of the whole run or a
reference shard set; banks: building those banks) and replay (re-run one pair of a unit and
compare every stored number of its rows)."""
