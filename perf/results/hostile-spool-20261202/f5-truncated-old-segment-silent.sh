#!/bin/bash
# An older (closed) segment truncated to 0 bytes or to its start record: its messages are lost with no
# damage report, and the segment is deleted as "holding nothing owed".
/tmp/hostile-findings/damage-cases.sh 16; /tmp/hostile-findings/damage-cases.sh 17
