using System.Runtime.InteropServices;

namespace FineAlign.Models;

/// <summary>
/// Tells glibc's malloc to give large freed blocks back to the OS at once. libtorch's CPU tensors come from malloc; by
/// default glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so a training step's
/// activations, once freed, stay in the heap as reusable-but-resident memory. At the qwen2.5-0.5b shape that kept
/// 1.6 GB of a 4 × 512 DPO step's 4.0 GB peak (bench/RESULTS.md). A fixed threshold (what
/// <c>MALLOC_MMAP_THRESHOLD_</c> does) maps every large tensor on its own and unmaps it when freed; the price is a fresh
/// zero-filled mapping per allocation, so it is opt-in (<c>--release-freed-memory</c>).
/// </summary>
public static class HostAllocator
{
    /// <summary>
    /// Blocks of at least this many bytes are mmapped and returned when freed. 4 MiB, measured (qwen2.5-0.5b LoRA DPO,
    /// 4 × 512, checkpointed): peak 2468 MB in 98.7 s, against 2461 MB / 103.9 s at 1 MiB, 3842 MB / 88.5 s at 16 MiB
    /// and 4033 MB / 88.6 s with glibc's dynamic threshold.
    /// </summary>
    public const int DefaultMmapThreshold = 4 << 20;

    /// <summary>What <see cref="ReturnFreedMemory"/> did, for a log line or a benchmark's record.</summary>
    public static string State { get; private set; } = "glibc default (dynamic mmap threshold)";

    /// <summary>
    /// Sets glibc's mmap threshold to <paramref name="thresholdBytes"/> unless the user set <c>MALLOC_MMAP_THRESHOLD_</c>
    /// (glibc read it at start-up; theirs wins) or the C library is not glibc (then nothing happens). Returns whether it
    /// set the threshold. Call it once, before the first large allocation.
    /// </summary>
    public static bool ReturnFreedMemory(int thresholdBytes = DefaultMmapThreshold)
    {
        if (Environment.GetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_") is { Length: > 0 } user)
        {
            State = $"MALLOC_MMAP_THRESHOLD_={user} (from the environment)";
            return false;
        }
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            if (mallopt(MmapThreshold, thresholdBytes) != 1) return false;
            State = $"mmap threshold {thresholdBytes} bytes (freed large blocks go back to the OS)";
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;   // musl or another libc without mallopt: its own policy stands
        }
    }

    private const int MmapThreshold = -3;   // M_MMAP_THRESHOLD in glibc's malloc.h

    [DllImport("libc")]
    private static extern int mallopt(int param, int value);
}
