using FineAlign.Data.Corpus;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;

namespace FineAlign.Tests.PpoTraining; // not "Ppo": that would shadow Objectives.Ppo in other test namespaces

public class TlcrLabelTests
{
    [Fact]
    public void LabelCommandAlignsAHandMadePairByteByByte()
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "pairs.jsonl"), output = Path.Combine(tmp.Path, "labels.jsonl");
        CommandFixtures.WriteLines(input,
            """{"prompt": "It was", "original": " a bad film", "revised": " a good film"}""",
            """{"prompt": "p", "response": "good and bad", "spans": [{"start": 0, "end": 4, "label": 1}, {"start": 9, "end": 12, "label": -1}]}""");
        var (code, _, err) = CliRunner.Run("tlcr-label", "--data", input, "--out", output);
        Assert.True(code == 0, err);
        var lines = CommandFixtures.ReadJsonl(output);
        Assert.Equal(3, lines.Count);
        // " a bad film" → " a good film": backtrace keeps d, substitutes a→o and b→o, inserts g (see TokenAlignment).
        Assert.Equal("original", lines[0]["kind"]!.GetValue<string>());
        Assert.Equal(" a bad film".Select(c => (int)c).ToArray(), CommandFixtures.Ints(lines[0]["input_ids"]));
        Assert.Equal(new[] { 0, 0, 0, -1, -1, 0, 0, 0, 0, 0, 0 }, CommandFixtures.Ints(lines[0]["labels"]));
        Assert.Equal(new[] { 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0 }, CommandFixtures.Ints(lines[1]["labels"]));
        // Spans: chars 0-3 positive, 9-11 negative.
        Assert.Equal(new[] { 1, 1, 1, 1, 0, 0, 0, 0, 0, -1, -1, -1 }, CommandFixtures.Ints(lines[2]["labels"]));
    }

    [Fact]
    public void BadSpanIsAOneLineErrorNamingFileLineAndField()
    {
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "bad.jsonl"), output = Path.Combine(tmp.Path, "labels.jsonl");
        CommandFixtures.WriteLines(input, """{"prompt": "p", "response": "abc", "spans": [{"start": 0, "end": 9, "label": 1}]}""");
        var (code, _, err) = CliRunner.Run("tlcr-label", "--data", input, "--out", output);
        Assert.Equal(1, code);
        Assert.Single(CliRunner.Lines(err));
        Assert.Contains("bad.jsonl:1: field 'spans'", err);
        Assert.False(File.Exists(output));
    }
}

[Collection("Serial torch RNG")]
public class TlcrTrainTests
{
    [Fact]
    public void DiscriminatorBeatsTheMajorityBaselineOnCorpusRevisions()
    {
        var tok = new ByteTokenizer();
        var pairs = BuiltinData.RevisionPairs(1234, 120);
        var data = TlcrLabeller.Label(tok, pairs).Select(x => TlcrTrainer.Encode(tok, x)).ToList();
        var config = ModelPresets.Create("tiny", tok, 384);
        using var disc = new ScoredLM(ModelFactory.Create(config, 3), HeadKind.Token, 2, 3);
        using var tmp = TestPaths.NewTempDir();
        var before = TlcrTrainer.Evaluate(disc, data, tok.PaddingId);
        var options = new TrainingOptions
        {
            OutputDir = tmp.Path, MaxSteps = 40, PerDeviceTrainBatchSize = 8, LearningRate = 3e-3, WarmupRatio = 0,
            EvalSteps = 0, SaveSteps = 0, LoggingSteps = 10, Seed = 5,
        };
        var result = TlcrTrainer.Train(disc, tok, data, null, options, neutralWeight: 0.1);
        Assert.True(result.Completed);
        var after = TlcrTrainer.Evaluate(disc, data, tok.PaddingId);
        Assert.True(after.Accuracy > after.MajorityBaseline + 0.03,
            $"token accuracy {after.Accuracy:F3} (before {before.Accuracy:F3}) vs majority {after.MajorityBaseline:F3}");
        // The saved folder is a 2-label token classifier that loads back with the same predictions.
        using var loaded = ScoredLM.Load(Path.Combine(tmp.Path, TlcrTrainer.ModelFolder));
        Assert.Equal(after.Accuracy, TlcrTrainer.Evaluate(loaded, data, tok.PaddingId).Accuracy, 6);
    }
}
