; Trap: out-of-bounds DRAM access. mesh1x1 has 1 GiB of DRAM; this DMA reads 512 bytes from 256 bytes
; before its end.
.machine mesh1x1
.section main cores=all
        li      r1, 0x0
        li      r2, 0x3FFFFF00
        dmadim  0, 128, sstride=4, dstride=4
        dmald   r1, r2, esize=4, ndim=1, sem=0, dt=f32      ; reads past the end of DRAM: traps
        wait    0, 1
        halt
