; matmul_4x4.s: C (f32, 128 x 128) = A (bf16, 128 x 128) @ B (bf16, 128 x 128) on a 4 x 4 mesh, SUMMA style.
;
; One code section runs on all 16 cores; each core finds its place with `rdsr`. Core (i, j) owns the
; 32 x 32 blocks A(i,j), B(i,j) and C(i,j). It DMAs its A and B blocks in, then for k = 0..3:
;   - the owner of A(i,k) (column k) multicasts it along row i      (put cast=row)
;   - the owner of B(k,j) (row k) multicasts it along column j      (put cast=col)
;   - every core waits for the blocks it did not send and does C(i,j) += A(i,k) @ B(k,j).
; Block k of A lands in A slot k and block k of B in B slot k of every core of the row or column, so no
; buffer is reused and each "arrived" semaphore only counts. Finally each core DMAs C(i,j) out.
;
; Semaphores: 0 DMA in, 1 A arrived, 2 B arrived, 3 put sources free, 4 DMA out.

.machine mesh4x4

.equ BLK 32                  ; block edge
.equ BLK_BYTES 2048          ; 32 x 32 bf16
.equ BLK_ROW 64              ; 32 bf16
.equ CBLK_ROW 128            ; 32 f32
.equ MAT_ROW 256             ; 128 bf16: a row of A or B in DRAM
.equ CMAT_ROW 512            ; 128 f32: a row of C in DRAM
.equ PANEL 8192              ; BLK * MAT_ROW: one block row of A or B in DRAM
.equ CPANEL 16384            ; BLK * CMAT_ROW
.equ STEPS 4

.equ A_DRAM 0x0
.equ B_DRAM 0x8000
.equ C_DRAM 0x10000
.equ A_SLOTS 0x0             ; SRAM: 4 slots of A blocks
.equ B_SLOTS 0x2000          ; SRAM: 4 slots of B blocks
.equ C_TILE 0x4000           ; SRAM: the C block (f32)

.tensor a input A_DRAM bf16 [128, 128]
.tensor b input B_DRAM bf16 [128, 128]
.tensor c output C_DRAM f32 [128, 128]

.section summa cores=all
        rdsr    r10, sr=row                 ; i
        rdsr    r11, sr=col                 ; j
        rdsr    r12, sr=coreid

        ; own blocks: A(i,j) goes to A slot j, B(i,j) to B slot i
        muli    r13, r11, BLK_BYTES
        addi    r13, r13, A_SLOTS
        muli    r14, r10, BLK_BYTES
        addi    r14, r14, B_SLOTS
        muli    r15, r10, PANEL             ; DRAM offset of block (i,j): i * PANEL + j * BLK_ROW
        muli    r16, r11, BLK_ROW
        add     r15, r15, r16
        addi    r17, r15, A_DRAM
        addi    r18, r15, B_DRAM
        dmadim  0, BLK, sstride=2, dstride=2
        dmadim  1, BLK, sstride=MAT_ROW, dstride=BLK_ROW
        dmald   r13, r17, esize=2, ndim=2, sem=0, dt=bf16
        dmald   r14, r18, esize=2, ndim=2, sem=0, dt=bf16

        li      r22, C_TILE
        vfill   r22, 0.0, rows=BLK, cols=BLK, sd=CBLK_ROW, dt=f32
        wait    0, 2

        li      r9, 0                       ; k
        li      r19, STEPS                  ; loop counter
        li      r23, A_SLOTS                ; A slot k
        li      r24, B_SLOTS                ; B slot k
step:
        bne     r11, r9, no_a_send          ; column k owns A(i,k): multicast it along the row
        put     r12, r23, r23, rows=BLK, bytes=BLK_ROW, ss=BLK_ROW, ds=BLK_ROW, cast=row, seml=3, semr=1
no_a_send:
        bne     r10, r9, no_b_send          ; row k owns B(k,j): multicast it along the column
        put     r12, r24, r24, rows=BLK, bytes=BLK_ROW, ss=BLK_ROW, ds=BLK_ROW, cast=col, seml=3, semr=2
no_b_send:
        beq     r11, r9, have_a
        wait    1, 1                        ; A(i,k) has arrived
have_a:
        beq     r10, r9, have_b
        wait    2, 1                        ; B(k,j) has arrived
have_b:
        mma     r22, r23, r24, m=BLK, n=BLK, k=BLK, sd=CBLK_ROW, sa=BLK_ROW, sb=BLK_ROW, dt=bf16, acc=1
        addi    r9, r9, 1
        addi    r23, r23, BLK_BYTES
        addi    r24, r24, BLK_BYTES
        loop    r19, step

        wait    3, 2                        ; both of this core's puts have left
        muli    r15, r10, CPANEL            ; DRAM offset of C(i,j): i * CPANEL + j * CBLK_ROW
        muli    r16, r11, CBLK_ROW
        add     r15, r15, r16
        addi    r15, r15, C_DRAM
        dmadim  0, BLK, sstride=4, dstride=4
        dmadim  1, BLK, sstride=CBLK_ROW, dstride=CMAT_ROW
        dmast   r15, r22, esize=4, ndim=2, sem=4
        wait    4, 1
        halt
