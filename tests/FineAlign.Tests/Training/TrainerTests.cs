using FineAlign.Objectives;
using FineAlign.Tests.Support;
using FineAlign.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Training;

[Collection("Serial torch RNG")]
public class TrainerTests
{
    private static TrainingOptions Opts(string dir, int maxSteps = 10, int seed = 1) => new()
    {
        OutputDir = dir, Seed = seed, MaxSteps = maxSteps, LearningRate = 3e-2, WarmupSteps = 2,
        LrSchedulerType = LrSchedulerType.Cosine, WeightDecay = 0.01, PerDeviceTrainBatchSize = 4,
        PerDeviceEvalBatchSize = 5, LoggingSteps = 1, SaveSteps = 5, MaxGradNorm = 1.0,
    };

    private static Trainer<TestBatch> NewTrainer(TinyLm model, TrainingOptions o, bool eval = false)
    {
        var data = TinyData.Examples(18);
        return new Trainer<TestBatch>(model, o, TinyData.Step(model), TinyData.Source(data[..14]),
            eval ? TinyData.Source(data[14..]) : null) { WriteTensorBoard = false, WriteLossCurve = false };
    }

    private static double[] Losses(TrainingResult r) => r.LogHistory.Where(e => e.ContainsKey("loss")).Select(e => e["loss"]).ToArray();

    private static float[] Flat(nn.Module m) => m.parameters().SelectMany(p => p.detach().data<float>().ToArray()).ToArray();

    private sealed class Hook(Action<ProgressUpdate> a) : IProgress<ProgressUpdate>
    {
        public void Report(ProgressUpdate value) => a(value);
    }

    [Fact]
    public void ResumeReproducesTheUninterruptedRunBitForBit()
    {
        using var straightDir = TestPaths.NewTempDir();
        using var resumedDir = TestPaths.NewTempDir();

        // Logging every 2 steps and saving every 5: the step-6 log averages a step from each side of the resume.
        TrainingOptions O(string dir) => Opts(dir) with { LoggingSteps = 2, SaveSteps = 5 };
        var straightModel = new TinyLm(dropout: 0.2);
        TrainingResult straight;
        using (var t = NewTrainer(straightModel, O(straightDir.Path))) straight = t.Train();

        // Run 2 dies at step 7 (after checkpoint-5 and after logging step 6), without saving.
        var first = new TinyLm(dropout: 0.2);
        using (var t = NewTrainer(first, O(resumedDir.Path)))
        {
            t.Progress = new Hook(p => { if (p.Step == 7) throw new InvalidOperationException("killed"); });
            Assert.Throws<InvalidOperationException>(() => t.Train());
        }
        Assert.Equal(CheckpointStore.PathFor(resumedDir.Path, 5), CheckpointStore.Latest(resumedDir.Path));

        // Resume into a differently initialised model: everything must come from the checkpoint.
        var second = new TinyLm(dropout: 0.2, initSeed: 99);
        TrainingResult resumed;
        using (var t = NewTrainer(second, O(resumedDir.Path) with { ResumeFromCheckpoint = "latest" })) resumed = t.Train();

        Assert.Equal(5, straight.LogHistory.Count);
        Assert.Equal(Losses(straight), Losses(resumed)); // exact double equality
        Assert.Equal(Flat(straightModel), Flat(second));

        // metrics.jsonl: each step once (the dead run's step-6 line was dropped), same values.
        var lines = MetricsLogger.Read(Path.Combine(resumedDir.Path, MetricsLogger.JsonlFile));
        Assert.Equal(new double[] { 2, 4, 6, 8, 10 }, lines.Select(l => l["step"]));
        Assert.Equal(Losses(straight), lines.Select(l => l["loss"]));
    }

    [Fact]
    public void SameSeedSameCurveDifferentSeedDifferentCurve()
    {
        double[] Run(int seed)
        {
            using var dir = TestPaths.NewTempDir();
            using var t = NewTrainer(new TinyLm(dropout: 0.2), Opts(dir.Path, maxSteps: 4, seed: seed) with { SaveSteps = 0 });
            return Losses(t.Train());
        }
        var a = Run(1);
        Assert.Equal(a, Run(1));
        Assert.NotEqual(a, Run(2));
    }

    [Fact]
    public void AccumulationMatchesOneLargeBatch()
    {
        Dictionary<string, float[]> Grads(int batch, int accum)
        {
            using var dir = TestPaths.NewTempDir();
            var model = new TinyLm();
            var o = Opts(dir.Path, maxSteps: 1) with { PerDeviceTrainBatchSize = batch, GradientAccumulationSteps = accum, MaxGradNorm = 0, SaveSteps = 0 };
            using var t = NewTrainer(model, o);
            var grads = new Dictionary<string, float[]>();
            t.BeforeOptimizerStep += _ =>
            {
                foreach (var (name, p) in model.named_parameters()) grads[name] = p.grad!.data<float>().ToArray();
            };
            var r = t.Train();
            grads["loss"] = new[] { (float)r.LogHistory[0]["loss"] };
            return grads;
        }
        var big = Grads(4, 1);
        var small = Grads(2, 2);
        Assert.Equal(big.Keys, small.Keys);
        foreach (var k in big.Keys)
            for (int i = 0; i < big[k].Length; i++)
                Assert.Equal(big[k][i], small[k][i], 5);
        Assert.True(big["lm_head.weight"].Any(g => Math.Abs(g) > 1e-3)); // gradients are not trivially zero
    }

    [Fact]
    public void ClippingCapsTheNormAndReportsThePreClipNorm()
    {
        using var dir = TestPaths.NewTempDir();
        var model = new TinyLm();
        using var t = NewTrainer(model, Opts(dir.Path, maxSteps: 1) with { MaxGradNorm = 1e-3, SaveSteps = 0 });
        double clipped = 0;
        t.BeforeOptimizerStep += _ =>
            clipped = Math.Sqrt(model.parameters().Sum(p => p.grad!.pow(2).sum().ToDouble()));
        var r = t.Train();
        Assert.Equal(1e-3, clipped, 6);
        Assert.True(r.LogHistory[0]["grad_norm"] > 0.01, "grad_norm must be the norm before clipping");
    }

    [Fact]
    public void NaNLossNamesTheStep()
    {
        using var dir = TestPaths.NewTempDir();
        var model = new TinyLm();
        var inner = TinyData.Step(model);
        int calls = 0;
        LossResult Poisoned(TestBatch b)
        {
            var r = inner(b);
            return ++calls == 3 ? r with { Loss = r.Loss * float.NaN } : r;
        }
        var o = Opts(dir.Path) with { SaveSteps = 0 };
        using var t = new Trainer<TestBatch>(model, o, Poisoned, TinyData.Source(TinyData.Examples(8))) { WriteTensorBoard = false };
        var e = Assert.Throws<FineAlignException>(() => t.Train());
        Assert.StartsWith("loss is NaN at step 3; lower the learning rate", e.Message);
    }

    [Fact]
    public void WeightDecaySkipsNormsAndBiases()
    {
        using var dir = TestPaths.NewTempDir();
        var model = new TinyLm();
        var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        // Zero gradient: AdamW's update is 0, so only the decoupled decay p ← p (1 − lr·wd) moves weights.
        LossResult ZeroGrad(TestBatch b) => new(model.parameters().Select(p => p.sum()).Aggregate((a, c) => a + c) * 0f);
        var o = Opts(dir.Path, maxSteps: 1) with { LearningRate = 0.1, WeightDecay = 0.5, WarmupSteps = 0, LrSchedulerType = LrSchedulerType.Constant, SaveSteps = 0 };
        using (var t = new Trainer<TestBatch>(model, o, ZeroGrad, TinyData.Source(TinyData.Examples(4))) { WriteTensorBoard = false, WriteLossCurve = false })
            t.Train();
        foreach (var (name, p) in model.named_parameters())
        {
            double factor = p.dim() >= 2 ? 1 - 0.1 * 0.5 : 1.0;
            Assert.True((before[name] * factor).allclose(p.detach(), rtol: 1e-6, atol: 1e-7), name);
        }
    }

    [Fact]
    public void RunWritesMetricsTensorBoardAndPngAndLearns()
    {
        using var dir = TestPaths.NewTempDir();
        var model = new TinyLm();
        var o = Opts(dir.Path, maxSteps: 40) with { LoggingSteps = 5, EvalSteps = 20, SaveSteps = 20, SaveTotalLimit = 1, WarmupSteps = 0 };
        var reports = new List<ProgressUpdate>();
        var data = TinyData.Examples(18);
        using var t = new Trainer<TestBatch>(model, o, TinyData.Step(model), TinyData.Source(data[..14]), TinyData.Source(data[14..]))
        { Progress = new Hook(reports.Add) };
        var r = t.Train();

        Assert.True(r.Completed);
        Assert.Equal(40, reports.Count);
        Assert.Equal(40, reports[^1].Step);
        Assert.All(reports, u => Assert.Equal(40, u.Total));
        Assert.Equal("train", reports[^1].Stage);
        Assert.True(reports[^1].Metrics!.ContainsKey("learning_rate"));

        var lines = MetricsLogger.Read(Path.Combine(dir.Path, MetricsLogger.JsonlFile));
        var train = lines.Where(l => l.ContainsKey("loss")).ToList();
        var eval = lines.Where(l => l.ContainsKey("eval/loss")).ToList();
        Assert.Equal(new double[] { 5, 10, 15, 20, 25, 30, 35, 40 }, train.Select(l => l["step"]));
        Assert.Equal(new double[] { 20, 40 }, eval.Select(l => l["step"]));
        foreach (var key in new[] { "epoch", "learning_rate", "grad_norm", "tokens_per_second", "num_target_tokens" })
            Assert.True(train[0].ContainsKey(key), key);
        Assert.True(train[^1]["loss"] < 0.7 * train[0]["loss"], $"loss did not fall: {train[0]["loss"]} → {train[^1]["loss"]}");
        Assert.Equal(40.0 / 4, train[^1]["epoch"], 9); // 14 examples in batches of 4 → 4 batches per epoch
        Assert.Equal(t.Evaluate(), eval[^1]["eval/loss"], 12);

        var tf = Directory.GetFiles(Path.Combine(dir.Path, MetricsLogger.TensorBoardFolder), "events.out.tfevents.*");
        Assert.Single(tf);
        Assert.True(new FileInfo(tf[0]).Length > 200);

        var png = File.ReadAllBytes(r.LossCurvePng!);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);

        Assert.Equal(new long[] { 40 }, CheckpointStore.List(dir.Path).Select(c => c.Step)); // save_total_limit = 1
        foreach (var f in new[] { CheckpointStore.ModelFile, CheckpointStore.OptimizerFile, CheckpointStore.RngFile, CheckpointStore.ArgsFile })
            Assert.True(File.Exists(Path.Combine(r.LastCheckpoint!, f)), f);
    }

    [Fact]
    public void CancellationStopsAfterTheStepAndSavesACheckpoint()
    {
        using var dir = TestPaths.NewTempDir();
        using var cts = new CancellationTokenSource();
        using var t = NewTrainer(new TinyLm(), Opts(dir.Path) with { SaveSteps = 0 });
        t.Progress = new Hook(p => { if (p.Step == 3) cts.Cancel(); });
        var r = t.Train(cts.Token);
        Assert.False(r.Completed);
        Assert.Equal(3, r.GlobalStep);
        Assert.Equal(CheckpointStore.PathFor(dir.Path, 3), r.LastCheckpoint);
        Assert.Equal(3, TrainerState.Load(Path.Combine(r.LastCheckpoint!, CheckpointStore.StateFile)).GlobalStep);
    }

    [Fact]
    public void FreshRunRefusesAFolderWithAnotherRunsCheckpoints()
    {
        using var dir = TestPaths.NewTempDir();
        using (var t = NewTrainer(new TinyLm(), Opts(dir.Path, maxSteps: 1))) t.Train();
        using var t2 = NewTrainer(new TinyLm(), Opts(dir.Path, maxSteps: 2));
        var e = Assert.Throws<FineAlignException>(() => t2.Train());
        Assert.Contains("already holds checkpoint-1", e.Message);
    }

    [Fact]
    public void ResumingIntoAnotherModelShapeNamesTheFile()
    {
        using var dir = TestPaths.NewTempDir();
        using (var t = NewTrainer(new TinyLm(), Opts(dir.Path, maxSteps: 1))) t.Train();
        using var t2 = NewTrainer(new TinyLm(hidden: 8), Opts(dir.Path, maxSteps: 2) with { ResumeFromCheckpoint = "latest" });
        var e = Assert.Throws<FineAlignException>(() => t2.Train());
        Assert.Contains(Path.Combine("checkpoint-1", CheckpointStore.ModelFile) + ": cannot load model weights", e.Message);
    }

    [Fact]
    public void ResumingWithAnotherSeedIsRefused()
    {
        using var dir = TestPaths.NewTempDir();
        using (var t = NewTrainer(new TinyLm(), Opts(dir.Path, maxSteps: 2) with { SaveSteps = 1 })) t.Train();
        using var t2 = NewTrainer(new TinyLm(), Opts(dir.Path, maxSteps: 4, seed: 5) with { ResumeFromCheckpoint = "latest" });
        var e = Assert.Throws<FineAlignException>(() => t2.Train());
        Assert.Contains("seed 1", e.Message);
    }
}
