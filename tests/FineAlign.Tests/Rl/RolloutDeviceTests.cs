using FineAlign.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Rl;

/// <summary>The rollout batch is built on the policy's device once (issue #15: no per-step host copies in the hot loop).</summary>
public class RolloutDeviceTests
{
    private static RolloutBatch Batch(Device? device)
    {
        var samples = new List<RolloutSample>
        {
            new([5, 6, 7], null, RolloutFinish.Stop), new([8], null, RolloutFinish.Length),
        };
        return RolloutBatch.From(samples, [[1, 2], [3]], ["p", "q"], ["r", "s"], 0, device);
    }

    [Fact]
    public void Rollout_tensors_are_built_on_the_given_device()
    {
        // The meta device stands in for CUDA (not served here): tensors there have shapes but no data, so a tensor left
        // on the host would show up as CPU.
        using var meta = Batch(new Device(DeviceType.META));
        foreach (var t in new[] { meta.InputIds, meta.AttentionMask, meta.ResponseIds, meta.ResponseMask })
            Assert.Equal(DeviceType.META, t.device_type);

        using var host = Batch(null);
        Assert.Equal(new long[] { 2, 5 }, meta.InputIds.shape);
        Assert.Equal(host.ResponseMask.shape, meta.ResponseMask.shape);
        Assert.Equal(ScalarType.Float32, meta.ResponseMask.dtype);
        Assert.Equal(DeviceType.CPU, host.InputIds.device_type);
        Assert.Equal(new float[] { 1, 1, 1, 1, 0, 0 }, host.ResponseMask.data<float>().ToArray());

        using var cpu = Batch(new Device(DeviceType.CPU));   // the CPU build: same tensors as no device at all
        Assert.True(cpu.InputIds.equal(host.InputIds).all().item<bool>());
        Assert.True(cpu.AttentionMask.equal(host.AttentionMask).all().item<bool>());
    }
}
