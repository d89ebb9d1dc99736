"""What the worker's agents and timers do: the engine's stages with state that survives crashes.

Exactness rests on three rules, the same for every stage:

1. a stage's state for an input partition is written to the state topic (a *snapshot*) with the
   last input offset it includes, and input messages are acknowledged to Faust, which commits
   the consumer offset, only once a snapshot covering them is stored. A restarted or newly
   assigned worker restores the snapshot and skips the messages it already includes;
2. stage 1 also writes, after every flush, a *progress* record with the last offset whose
   measurements were sent. After a restore, messages up to it rebuild state but their
   measurements are not sent again;
3. outputs are written (and acknowledged by the broker) before the snapshot or progress record
   that says they were. What a crash can repeat is then only output with the same content and
   identity: partials with the same offset stamps (stage 2 drops them), verdicts for windows
   already judged (the decider drops them), commands with the same ids (subscribers drop them).

Snapshots are restored as soon as partitions are assigned (and, should that not have happened
yet, on a partition's first message). The worker is *ready* (``/ready``) once every assigned
partition's state is restored and stage 1 has read each predictions partition to its end once.
"""

from streamguard.faust_app.runtime.base import Topics
from streamguard.faust_app.runtime.lifecycle import Runtime

__all__ = ["Runtime", "Topics"]
