; Trap: race. The vector op reads the tile that an incoming DMA is still writing (no wait before it).
.machine mesh1x1
.section main cores=all
        li      r1, 0x0
        li      r2, 0x0
        dmadim  0, 1024, sstride=4, dstride=4
        dmald   r1, r2, esize=4, ndim=1, sem=0, dt=f32
        vadds   r1, r1, 1.0, rows=1, cols=16, sd=64, sa=64, dt=f32     ; the DMA is still pending: traps
        wait    0, 1
        halt
