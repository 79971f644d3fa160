; Trap: out-of-bounds SRAM access. The tile starts inside SRAM (1.25 MiB) but its second row ends past it.
.machine mesh1x1
.section main cores=all
        li      r1, 0x13FFC0                                ; 64 bytes before the end of SRAM
        vfill   r1, 1.0, rows=2, cols=16, sd=64, dt=f32     ; row 1 lies past the end: traps
        halt
