; matmul_1core.s: C (f32, M x N) = A (bf16, M x K) @ B (bf16, K x N) on one core.
;
; DMA A and B from DRAM into SRAM (2-D strided DMAs), one matrix multiply-accumulate on the tiles,
; DMA C back to DRAM. Cycles: the DMAs overlap each other; the mma waits for both.
;
;   dojoc asm examples/matmul_1core.s -o mm.dobj
;   dojoc run mm.dobj --input a.npy --input b.npy --output c.npz

.machine mesh1x1

.equ M 64
.equ K 128
.equ N 96
.equ A_ROW 256              ; K * 2 bytes
.equ B_ROW 192              ; N * 2 bytes
.equ C_ROW 384              ; N * 4 bytes

; DRAM tensors: name, role, address, type, shape
.tensor a input 0x0 bf16 [M, K]
.tensor b input 0x10000 bf16 [K, N]
.tensor c output 0x20000 f32 [M, N]

.section main cores=all
        li      r1, 0x0             ; SRAM: A tile (16 KiB)
        li      r2, 0x4000          ; SRAM: B tile (24 KiB)
        li      r3, 0xA000          ; SRAM: C tile (24 KiB, f32)
        li      r4, 0x0             ; DRAM: a
        li      r5, 0x10000         ; DRAM: b
        li      r6, 0x20000         ; DRAM: c

        dmadim  0, K, sstride=2, dstride=2              ; a row: K contiguous bf16
        dmadim  1, M, sstride=A_ROW, dstride=A_ROW      ; M rows
        dmald   r1, r4, esize=2, ndim=2, sem=0, dt=bf16
        dmadim  0, N, sstride=2, dstride=2
        dmadim  1, K, sstride=B_ROW, dstride=B_ROW
        dmald   r2, r5, esize=2, ndim=2, sem=0, dt=bf16
        wait    0, 2                                    ; both tiles have arrived

        mma     r3, r1, r2, m=M, n=N, k=K, sd=C_ROW, sa=A_ROW, sb=B_ROW, dt=bf16

        dmadim  0, N, sstride=4, dstride=4
        dmadim  1, M, sstride=C_ROW, dstride=C_ROW
        dmast   r6, r3, esize=4, ndim=2, sem=1
        wait    1, 1                                    ; C is in DRAM
        halt
