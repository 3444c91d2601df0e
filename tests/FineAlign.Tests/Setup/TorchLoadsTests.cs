using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Setup;

/// <summary>Proves the native glue loads from the test host (the Debian 12 GLIBCXX patch works).</summary>
public class TorchLoadsTests
{
    [Fact]
    public void MatrixMultiplyRunsOnCpu()
    {
        using var a = tensor(new float[] { 1, 2, 3, 4 }, new long[] { 2, 2 });
        using var b = a.matmul(a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, b.data<float>().ToArray());
    }
}
