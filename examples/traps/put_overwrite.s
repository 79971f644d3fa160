; Trap: race. Core 0 overwrites the source of its put before the put has left (64 KiB take 1024 link
; cycles); it should `wait` on the put's local semaphore first.
.machine mesh2x2
.section sender cores=0
        li      r1, 1                                       ; destination: core 1
        li      r2, 0x0
        put     r1, r2, r2, rows=1, bytes=65536, seml=0, semr=0
        vfill   r2, 0.0, rows=1, cols=16, sd=64, dt=f32     ; the source is still leaving: traps
        wait    0, 1
        halt
.section receiver cores=1
        wait    0, 1
        halt
