using System.Text.Json.Nodes;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Training;

namespace FineAlign.Tests.Reliability;

/// <summary>Same seed + same data + same settings on CPU → bit-identical metrics and weights (docs/RELIABILITY.md).</summary>
[Collection("Serial torch RNG")]
public class DeterminismTests
{
    private static string[] Sft(string outDir, int seed) =>
    [
        "sft", "--out", outDir, "--init", "tiny", "--context-length", "96", "--corpus-size", "60", "--batch-size", "4",
        "--max-steps", "3", "--save-steps", "3", "--logging-steps", "1", "--eval-steps", "3", "--samples", "0", "--seed", seed.ToString(),
    ];

    [Fact]
    public void Two_runs_with_the_same_seed_are_bit_identical_and_another_seed_is_not()
    {
        using var tmp = TestPaths.NewTempDir();
        string a = Path.Combine(tmp.Path, "a"), b = Path.Combine(tmp.Path, "b"), c = Path.Combine(tmp.Path, "c");
        Assert.Equal(0, CliRunner.Run(Sft(a, 5)).Code);
        Assert.Equal(0, CliRunner.Run(Sft(b, 5)).Code);
        Assert.Equal(0, CliRunner.Run(Sft(c, 6)).Code);

        CrashResumeTests.AssertSameRun(a, b);
        // Byte-identical weight files, not just equal tensors.
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "model", "model.safetensors")), File.ReadAllBytes(Path.Combine(b, "model", "model.safetensors")));
        // The comparison can fail: a different seed gives a different curve.
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => CrashResumeTests.AssertSameRun(a, c));

        // The thread count, part of the contract, is recorded in every checkpoint.
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(a, "checkpoint-3", CheckpointStore.StateFile)))!;
        Assert.Equal(TorchSharp.torch.get_num_threads(), state["torch_num_threads"]!.GetValue<int>());
    }
}
