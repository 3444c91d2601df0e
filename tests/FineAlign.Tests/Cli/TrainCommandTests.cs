using FineAlign.Models;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Training;
using TorchSharp;

namespace FineAlign.Tests.Cli;

/// <summary>`finealign sft` / `pretrain` as a user runs them, on tiny settings.</summary>
[Collection("Serial torch RNG")]
public class TrainCommandTests
{
    private static string[] Tiny(string command, string outDir, params string[] extra) => TinyWith(command, outDir, "2", extra);

    private static string[] TinyWith(string command, string outDir, string samples, params string[] extra) =>
    [
        command, "--out", outDir, "--init", "tiny", "--context-length", "96", "--corpus-size", "60",
        "--batch-size", "4", "--eval-batch-size", "8", "--max-steps", "6", "--save-steps", "3", "--eval-steps", "3",
        "--logging-steps", "1", "--samples", samples, "--seed", "5", .. extra,
    ];

    [Fact]
    public void SftOnBuiltinCorpusWritesALoadableHuggingFaceModel()
    {
        using var dir = TestPaths.NewTempDir();
        string outDir = Path.Combine(dir.Path, "run");
        var (code, stdout, stderr) = CliRunner.Run(Tiny("sft", outDir));
        Assert.True(code == 0, stderr + stdout);

        string modelDir = Path.Combine(outDir, "model");
        using var model = ModelIO.Load(modelDir);
        var tokenizer = TokenizerLoader.Load(modelDir);
        Assert.IsType<ByteTokenizer>(tokenizer);
        Assert.Equal(tokenizer.VocabSize, model.Config.VocabSize);
        // The checkpoint holds an HF folder too, identical weights at the last step.
        using var fromCheckpoint = ModelIO.Load(Path.Combine(outDir, "checkpoint-6", "model"));
        foreach (var ((name, a), (_, b)) in model.named_parameters().Zip(fromCheckpoint.named_parameters()))
            Assert.True(a.equal(b).all().item<bool>(), name);

        var metrics = MetricsLogger.Read(Path.Combine(outDir, MetricsLogger.JsonlFile));
        Assert.Equal(6, metrics.Count(m => m.ContainsKey("loss")));
        Assert.Contains(metrics, m => m.ContainsKey("eval/loss"));
        Assert.True(File.Exists(Path.Combine(outDir, "loss.png")));
        var sampleLines = File.ReadAllLines(Path.Combine(outDir, "samples.jsonl"));
        Assert.Equal(2, sampleLines.Length);
        Assert.All(sampleLines, l => Assert.Contains("\"true_reward\"", l));   // the built-in corpus: its ground truth
        Assert.Contains("model saved to", stdout);
    }

    [Fact]
    public void ResumeAfterALostCheckpointContinuesTheIdenticalLossCurve()
    {
        using var dir = TestPaths.NewTempDir();
        string straight = Path.Combine(dir.Path, "straight");
        string resumed = Path.Combine(dir.Path, "resumed");
        Assert.Equal(0, CliRunner.Run(TinyWith("sft", straight, "0")).Code);
        Assert.Equal(0, CliRunner.Run(TinyWith("sft", resumed, "0")).Code);

        // Simulate a run killed after checkpoint-3: the later checkpoint and the final model never existed.
        Directory.Delete(Path.Combine(resumed, "checkpoint-6"), true);
        Directory.Delete(Path.Combine(resumed, "model"), true);
        var (code, stdout, stderr) = CliRunner.Run(TinyWith("sft", resumed, "0", "--resume"));
        Assert.True(code == 0, stderr + stdout);

        double[] Losses(string run) => MetricsLogger.Read(Path.Combine(run, MetricsLogger.JsonlFile))
            .Where(m => m.ContainsKey("loss")).Select(m => m["loss"]).ToArray();
        Assert.Equal(Losses(straight), Losses(resumed));   // bitwise: same seed, CPU
        using var a = ModelIO.Load(Path.Combine(straight, "model"));
        using var b = ModelIO.Load(Path.Combine(resumed, "model"));
        foreach (var ((name, pa), (_, pb)) in a.named_parameters().Zip(b.named_parameters()))
            Assert.True(pa.equal(pb).all().item<bool>(), name);
    }

    [Fact]
    public void PretrainOnATextFile()
    {
        using var dir = TestPaths.NewTempDir();
        string text = Path.Combine(dir.Path, "stories.txt");
        File.WriteAllText(text, string.Join("\n\n", Enumerable.Range(0, 40).Select(i => $"Story {i}: the cat sat on the mat and looked at the dog number {i}.")));
        string outDir = Path.Combine(dir.Path, "run");
        var (code, stdout, stderr) = CliRunner.Run(TinyWith("pretrain", outDir, "1", "--data", text));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("training", stdout);
        using var model = ModelIO.Load(Path.Combine(outDir, "model"));
        Assert.Equal(96, model.Config.MaxPositionEmbeddings);
        // The user's text: the corpus lexicon is no reward for it, so the samples carry none and the output says so.
        var sampleLines = File.ReadAllLines(Path.Combine(outDir, "samples.jsonl"));
        Assert.Single(sampleLines);
        Assert.DoesNotContain("true_reward", sampleLines[0]);
        Assert.Contains("no reward (not the built-in corpus", stdout);
    }

    [Fact]
    public void MalformedDataFailsWithFileLineAndFieldAndWritesNothing()
    {
        using var dir = TestPaths.NewTempDir();
        string data = Path.Combine(dir.Path, "bad.jsonl");
        File.WriteAllText(data, "{\"prompt\": \"Hi\", \"completion\": \" there\"}\n{\"prompt\": \"Yo\", \"completion\": 3}\n");
        string outDir = Path.Combine(dir.Path, "run");
        var (code, _, stderr) = CliRunner.Run(Tiny("sft", outDir, "--data", data));
        Assert.Equal(1, code);
        var line = Assert.Single(CliRunner.Lines(stderr));
        Assert.Contains("bad.jsonl:2", line);
        Assert.Contains("completion", line);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void MissingDataFileAndTooLongMaxLengthAreOneLineErrors()
    {
        using var dir = TestPaths.NewTempDir();
        var missing = CliRunner.Run(Tiny("sft", Path.Combine(dir.Path, "a"), "--data", Path.Combine(dir.Path, "nope.jsonl")));
        Assert.Equal(1, missing.Code);
        Assert.Contains("nope.jsonl", Assert.Single(CliRunner.Lines(missing.Err)));

        var tooLong = CliRunner.Run(Tiny("sft", Path.Combine(dir.Path, "b"), "--max-length", "500"));
        Assert.Equal(1, tooLong.Code);
        Assert.Contains("context", Assert.Single(CliRunner.Lines(tooLong.Err)));
    }
}
