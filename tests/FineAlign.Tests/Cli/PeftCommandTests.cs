using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Training;
using static TorchSharp.torch;

namespace FineAlign.Tests.Cli;

/// <summary>--use-peft / merge / --bf16 / --gradient-checkpointing as a user runs them, on a tiny saved base.</summary>
[Collection("Serial torch RNG")]
public class PeftCommandTests
{
    private static string SaveBase(string dir)
    {
        var tok = new ByteTokenizer();
        var model = ModelFactory.Create(ModelPresets.Create("tiny", tok, 96), seed: 9);
        string path = Path.Combine(dir, "base");
        ModelIO.Save(model, path, tok);
        return path;
    }

    private static string[] Sft(string baseDir, string outDir, params string[] extra) =>
    [
        "sft", "--model", baseDir, "--out", outDir, "--corpus-size", "60", "--batch-size", "4", "--eval-batch-size", "8",
        "--max-steps", "4", "--save-steps", "2", "--eval-steps", "0", "--logging-steps", "1", "--samples", "0", "--seed", "5",
        "--learning-rate", "1e-2", "--use-peft", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", .. extra,
    ];

    private static List<double> Losses(string outDir) =>
        MetricsLogger.Read(Path.Combine(outDir, MetricsLogger.JsonlFile)).Where(m => m.ContainsKey("loss")).Select(m => m["loss"]).ToList();

    [Fact]
    public void Lora_sft_saves_adapters_only_resumes_identically_and_merges_to_the_same_log_probs()
    {
        using var dir = TestPaths.NewTempDir();
        string baseDir = SaveBase(dir.Path);
        string straight = Path.Combine(dir.Path, "straight"), resumed = Path.Combine(dir.Path, "resumed");
        var (code, stdout, stderr) = CliRunner.Run(Sft(baseDir, straight));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("LoRA r 4", stdout);
        // Checkpoints and the output hold the adapter (PEFT folder), not a copy of the base.
        string ck = Path.Combine(straight, "checkpoint-2", "model");
        Assert.True(File.Exists(Path.Combine(ck, Lora.ConfigFile)) && File.Exists(Path.Combine(ck, Lora.WeightsFile)));
        Assert.False(File.Exists(Path.Combine(ck, "model.safetensors")));
        var losses = Losses(straight);
        Assert.Equal(4, losses.Count);
        Assert.True(losses[^1] < losses[0], $"LoRA SFT did not lower the loss: {string.Join(", ", losses)}");

        Assert.Equal(0, CliRunner.Run(Sft(baseDir, resumed)).Code);
        Directory.Delete(Path.Combine(resumed, "checkpoint-4"), true);
        Directory.Delete(Path.Combine(resumed, "model"), true);
        (code, stdout, stderr) = CliRunner.Run(Sft(baseDir, resumed, "--resume"));
        Assert.True(code == 0, stderr + stdout);
        Assert.Equal(losses, Losses(resumed));                                   // the identical curve, bit for bit

        string merged = Path.Combine(dir.Path, "merged");
        (code, stdout, stderr) = CliRunner.Run(["merge", "--model", baseDir, "--adapter", Path.Combine(straight, "model"), "--out", merged]);
        Assert.True(code == 0, stderr + stdout);
        Assert.False(Lora.IsAdapterFolder(merged));
        using var plain = ModelIO.Load(merged);
        using var live = ModelIO.Load(baseDir);
        Lora.Apply(live, Lora.ReadConfig(Path.Combine(straight, "model")), seed: 0);
        ModelIO.LoadInto(live, Path.Combine(straight, "model"));
        live.eval();
        var ids = randint(0, 256, new long[] { 2, 12 }, generator: new TorchSharp.torch.Generator(3));
        var mask = ones(2, 12, ScalarType.Bool);
        using var _ = no_grad();
        var a = CausalLmLoss.SequenceLogProbs(live, ids, null, mask);
        var b = CausalLmLoss.SequenceLogProbs(plain, ids, null, mask);
        Assert.True((a - b).abs().max().item<float>() <= 1e-3, $"merged differs from base+adapter by {(a - b).abs().max().item<float>()}");
        var basePlain = ModelIO.Load(baseDir);
        Assert.True((CausalLmLoss.SequenceLogProbs(basePlain, ids, null, mask) - a).abs().max().item<float>() > 1e-3);   // the adapter did something
    }

    [Fact]
    public void Lora_dpo_trains_against_the_base_with_the_adapter_off()
    {
        using var dir = TestPaths.NewTempDir();
        string baseDir = SaveBase(dir.Path);
        string outDir = Path.Combine(dir.Path, "dpo");
        var (code, stdout, stderr) = CliRunner.Run(["dpo", "--model", baseDir, "--out", outDir, "--corpus-size", "40", "--batch-size", "2",
            "--max-steps", "2", "--save-steps", "0", "--max-length", "48", "--eval-steps", "0", "--logging-steps", "1", "--learning-rate", "1e-2", "--use-peft",
            "--lora-r", "2", "--lora-target-modules", "all-linear", "--gradient-checkpointing", "--bf16"]);
        Assert.True(code == 0, stderr + stdout);
        Assert.True(Lora.IsAdapterFolder(Path.Combine(outDir, "model")));
        var first = MetricsLogger.Read(Path.Combine(outDir, MetricsLogger.JsonlFile)).First(m => m.ContainsKey("loss"));
        // Step 1: B = 0, so policy = reference and the DPO loss is exactly log 2.
        Assert.True(Math.Abs(first["loss"] - Math.Log(2)) < 1e-6, $"first loss {first["loss"]}");
    }

    [Theory]
    [InlineData("--lora-r", "0", "--lora-r")]
    [InlineData("--lora-target-modules", "q_proj,query_key_value", "'query_key_value' names no module")]
    public void Bad_lora_options_are_one_line_errors(string flag, string value, string expected)
    {
        using var dir = TestPaths.NewTempDir();
        string baseDir = SaveBase(dir.Path);
        string outDir = Path.Combine(dir.Path, "run");
        var args = Sft(baseDir, outDir).ToList();
        int at = args.IndexOf(flag);
        if (at >= 0) args[at + 1] = value; else args.AddRange([flag, value]);
        var (code, stdout, stderr) = CliRunner.Run(args.ToArray());
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(Path.Combine(outDir, "model")));
    }

    [Fact]
    public void Use_peft_without_a_base_model_is_refused()
    {
        using var dir = TestPaths.NewTempDir();
        var (code, _, stderr) = CliRunner.Run(["sft", "--init", "tiny", "--out", Path.Combine(dir.Path, "x"), "--use-peft", "--max-steps", "1"]);
        Assert.NotEqual(0, code);
        Assert.Contains("--use-peft needs --model", stderr);
    }
}
