; Trap: deadlock. Each core waits for a signal that the other sends only after its own wait.
.machine mesh2x2
.section ping cores=0
        li      r1, 1
        wait    3, 1                                        ; waits for core 1 ...
        signal  r1, 5
        halt
.section pong cores=1
        li      r1, 0
        wait    5, 1                                        ; ... which waits for core 0
        signal  r1, 3
        halt
