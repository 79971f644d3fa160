; Trap: number-format fault. 0 / 0 gives a NaN in f32; converting a NaN to CFP8 traps (CFP8 has no NaN).
.machine mesh1x1
.section main cores=all
        li      r1, 0x0
        li      r2, 0x100
        vfill   r1, 0.0, rows=1, cols=16, sd=64, dt=f32
        vdiv    r1, r1, r1, rows=1, cols=16, sd=64, sa=64, sb=64, dt=f32     ; 0 / 0 = NaN
        vcvt    r2, r1, rows=1, cols=16, sd=16, sa=64, dtd=cf8e4, dts=f32   ; NaN to CFP8: traps
        halt
