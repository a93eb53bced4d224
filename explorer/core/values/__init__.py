"""Values on a group's token tree (V of every box, the step advantages, the forks where the reward is decided) and
the plan of a value run (which prefixes + tokens to estimate); above core.tree and core.rl, which it combines."""
