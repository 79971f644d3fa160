; Trap: race. Core 1 writes the SRAM that core 0's put is about to fill, before waiting for it.
.machine mesh2x2
.section sender cores=0
        li      r1, 1                                       ; destination: core 1
        li      r2, 0x0
        put     r1, r2, r2, rows=1, bytes=4096, seml=0, semr=0
        wait    0, 1
        halt
.section receiver cores=1
        li      r2, 0x0
        nop
        nop
        nop
        vfill   r2, 0.0, rows=1, cols=16, sd=64, dt=f32     ; the put into 0x0 is in flight: traps
        wait    0, 1
        halt
