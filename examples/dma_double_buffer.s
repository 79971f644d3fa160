; dma_double_buffer.s: C (f32, 32 x 64) = A (bf16, 32 x 512) @ B (bf16, 512 x 64), streaming K in
; 8 chunks of 64 with two SRAM buffers: the DMAs of chunk i+1 run while the matrix unit works on chunk i.
;
; Buffer 0 holds the even chunks (semaphore 0), buffer 1 the odd ones (semaphore 1); the loop body
; handles one pair of chunks. A chunk is A[:, 64c : 64c + 64] (a 2-D strided DMA) and B[64c : 64c + 64, :]
; (one contiguous 8 KiB DMA).
;
; Lines tagged [transfer] or [compute] are removed by tests/emu/test_kernels.py to time the DMA traffic
; alone and the compute alone; the full kernel must take less than their sum and more than either.

.machine mesh1x1

.equ M 32
.equ KC 64                   ; K per chunk
.equ N 64
.equ PAIRS 4                 ; 8 chunks
.equ A_ROW 1024              ; 512 bf16: a row of A in DRAM
.equ A_CHUNK_ROW 128         ; 64 bf16: a row of an A chunk in SRAM (and a row of B)
.equ A_STEP 128              ; DRAM offset from one A chunk to the next (64 bf16 columns)
.equ B_CHUNK 8192            ; 64 x 64 bf16 rows of B
.equ B_ELEMS 4096
.equ C_ROW 256               ; 64 f32
.equ C_ELEMS 2048

.equ A_DRAM 0x0
.equ B_DRAM 0x8000
.equ C_DRAM 0x18000

.tensor a input A_DRAM bf16 [32, 512]
.tensor b input B_DRAM bf16 [512, 64]
.tensor c output C_DRAM f32 [32, 64]

.section main cores=all
        li      r1, 0x0                 ; buffer 0: A chunk (4 KiB)
        li      r2, 0x1000              ; buffer 0: B chunk (8 KiB)
        li      r3, 0x3000              ; buffer 1: A chunk
        li      r4, 0x4000              ; buffer 1: B chunk
        li      r5, 0x6000              ; C accumulator (8 KiB f32)
        li      r6, A_DRAM              ; next A chunk in DRAM
        li      r7, B_DRAM              ; next B chunk in DRAM
        li      r8, C_DRAM
        li      r9, PAIRS               ; loop counter
        li      r10, 1
        vfill   r5, 0.0, rows=M, cols=N, sd=C_ROW, dt=f32                           ; [compute]

        ; prologue: chunk 0 into buffer 0
        dmadim  0, KC, sstride=2, dstride=2                                         ; [transfer]
        dmadim  1, M, sstride=A_ROW, dstride=A_CHUNK_ROW                            ; [transfer]
        dmald   r1, r6, esize=2, ndim=2, sem=0, dt=bf16                             ; [transfer]
        dmadim  0, B_ELEMS, sstride=2, dstride=2                                    ; [transfer]
        dmald   r2, r7, esize=2, ndim=1, sem=0, dt=bf16                             ; [transfer]
        addi    r6, r6, A_STEP
        addi    r7, r7, B_CHUNK

pair:
        ; odd chunk into buffer 1, while the even chunk is multiplied
        dmadim  0, KC, sstride=2, dstride=2                                         ; [transfer]
        dmadim  1, M, sstride=A_ROW, dstride=A_CHUNK_ROW                            ; [transfer]
        dmald   r3, r6, esize=2, ndim=2, sem=1, dt=bf16                             ; [transfer]
        dmadim  0, B_ELEMS, sstride=2, dstride=2                                    ; [transfer]
        dmald   r4, r7, esize=2, ndim=1, sem=1, dt=bf16                             ; [transfer]
        addi    r6, r6, A_STEP
        addi    r7, r7, B_CHUNK
        wait    0, 2                                                                ; [transfer]
        mma     r5, r1, r2, m=M, n=N, k=KC, sd=C_ROW, sa=A_CHUNK_ROW, sb=A_CHUNK_ROW, dt=bf16, acc=1  ; [compute]

        ; the next even chunk into buffer 0 (not after the last pair), while the odd chunk is multiplied
        beq     r9, r10, last_pair
        dmadim  0, KC, sstride=2, dstride=2                                         ; [transfer]
        dmadim  1, M, sstride=A_ROW, dstride=A_CHUNK_ROW                            ; [transfer]
        dmald   r1, r6, esize=2, ndim=2, sem=0, dt=bf16                             ; [transfer]
        dmadim  0, B_ELEMS, sstride=2, dstride=2                                    ; [transfer]
        dmald   r2, r7, esize=2, ndim=1, sem=0, dt=bf16                             ; [transfer]
        addi    r6, r6, A_STEP
        addi    r7, r7, B_CHUNK
last_pair:
        wait    1, 2                                                                ; [transfer]
        mma     r5, r3, r4, m=M, n=N, k=KC, sd=C_ROW, sa=A_CHUNK_ROW, sb=A_CHUNK_ROW, dt=bf16, acc=1  ; [compute]
        loop    r9, pair

        dmadim  0, C_ELEMS, sstride=4, dstride=4                                    ; [transfer]
        dmast   r8, r5, esize=4, ndim=1, sem=2                                      ; [transfer]
        wait    2, 1                                                                ; [transfer]
        halt
