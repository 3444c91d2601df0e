using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Models;

/// <summary>
/// The allocator setting behind `--release-freed-memory` (issue #15: glibc kept 1.6 GB of a 4 × 512 step's freed memory
/// resident). One class, so the tests that touch MALLOC_MMAP_THRESHOLD_ never run at the same time.
/// </summary>
public class HostAllocatorTests
{
    [Fact]
    public void TheUsersMallocSettingWinsAndOtherwiseGlibcIsToldToReturnLargeBlocks()
    {
        Environment.SetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_", "65536");
        try
        {
            Assert.False(HostAllocator.ReturnFreedMemory());
            Assert.Contains("MALLOC_MMAP_THRESHOLD_=65536", HostAllocator.State);
        }
        finally { Environment.SetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_", null); }

        if (!OperatingSystem.IsLinux()) return;
        Assert.True(HostAllocator.ReturnFreedMemory());   // this Debian's glibc accepts M_MMAP_THRESHOLD
        Assert.Contains($"{HostAllocator.DefaultMmapThreshold} bytes", HostAllocator.State);
    }

    [Fact]
    public void TheGlobalFlagReachesTheAllocatorFromAnyCommand()
    {
        string qwen = Path.Combine(TestPaths.RequireShared("tokenizers"), "qwen3");
        Environment.SetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_", "131072");   // so the flag's call is seen in State
        try
        {
            var (code, output, err) = CliRunner.Run("tokenize", "--model", qwen, "--text", "Hello", "--release-freed-memory");
            Assert.True(code == 0, err + output);
            Assert.Contains("MALLOC_MMAP_THRESHOLD_=131072", HostAllocator.State);
        }
        finally { Environment.SetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_", null); }
    }
}
