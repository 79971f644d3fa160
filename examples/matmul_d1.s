; matmul_d1.s: C (f32, 768 x 7552) = A (bf16, 768 x 512) @ B (bf16, 512 x 7552) on all 354 cores of a D1.
;
; C is cut into 6 x 59 = 354 blocks of 128 x 128; core `id` computes block (id / 59, id % 59). One code
; section serves every core: it reads its id, DMAs its A row block (128 x 512) and B column block
; (512 x 128) from DRAM, multiplies them in one mma, and DMAs its C block back.
;
; Every byte comes from the one DRAM port (one DIP, 400 B/cycle) that the d1 preset attaches, so the
; kernel is DRAM-bound: ~90 MB in for ~11.9 GMAC of work. examples/demo.py runs it and prints the report.

.machine d1

.equ BLK 128
.equ K 512
.equ GRID_COLS 59
.equ A_ROW 1024              ; K bf16: a row of A
.equ B_ROW 15104             ; 7552 bf16: a row of B
.equ C_ROW 30208             ; 7552 f32: a row of C
.equ A_PANEL 131072          ; BLK rows of A
.equ C_PANEL 3866624         ; BLK rows of C
.equ BLK_ROW_B 256           ; BLK bf16
.equ BLK_ROW_C 512           ; BLK f32

.equ A_DRAM 0x0
.equ B_DRAM 0x100000
.equ C_DRAM 0x1000000
.equ A_TILE 0x0              ; SRAM: 128 KiB
.equ B_TILE 0x20000          ; SRAM: 128 KiB
.equ C_TILE 0x40000          ; SRAM: 64 KiB (f32)

.tensor a input A_DRAM bf16 [768, 512]
.tensor b input B_DRAM bf16 [512, 7552]
.tensor c output C_DRAM f32 [768, 7552]

.section blocks cores=all
        rdsr    r1, sr=coreid
        li      r2, GRID_COLS
        div     r3, r1, r2                  ; block row bi
        rem     r4, r1, r2                  ; block column bj
        li      r20, A_TILE
        li      r21, B_TILE
        li      r22, C_TILE

        muli    r5, r3, A_PANEL             ; A row block: a + bi * A_PANEL
        addi    r5, r5, A_DRAM
        dmadim  0, K, sstride=2, dstride=2
        dmadim  1, BLK, sstride=A_ROW, dstride=A_ROW
        dmald   r20, r5, esize=2, ndim=2, sem=0, dt=bf16

        muli    r6, r4, BLK_ROW_B           ; B column block: b + bj * BLK_ROW_B, rows B_ROW apart
        addi    r6, r6, B_DRAM
        dmadim  0, BLK, sstride=2, dstride=2
        dmadim  1, K, sstride=B_ROW, dstride=BLK_ROW_B
        dmald   r21, r6, esize=2, ndim=2, sem=0, dt=bf16
        wait    0, 2

        mma     r22, r20, r21, m=BLK, n=BLK, k=K, sd=BLK_ROW_C, sa=A_ROW, sb=BLK_ROW_B, dt=bf16

        muli    r7, r3, C_PANEL             ; C block: c + bi * C_PANEL + bj * BLK_ROW_C
        muli    r8, r4, BLK_ROW_C
        add     r7, r7, r8
        li      r9, C_DRAM
        add     r7, r7, r9
        dmadim  0, BLK, sstride=4, dstride=4
        dmadim  1, BLK, sstride=BLK_ROW_C, dstride=C_ROW
        dmast   r7, r22, esize=4, ndim=2, sem=1
        wait    1, 1
        halt
