using System.Diagnostics;
using System.Text.RegularExpressions;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Training;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// Crash safety: the real CLI (a child process) is SIGKILLed at seeded random moments; after every kill each
/// checkpoint-N that exists must be complete and loadable, and --resume must finish with the loss curve and weights
/// of an uninterrupted run, bit for bit (same seed, CPU, same thread count). Child processes with --threads 1 keep the
/// test's own torch threads and RNG out of it.
/// </summary>
[Collection("Serial torch RNG")]
public class CrashResumeTests
{
    private static readonly string CliDll = Path.Combine(AppContext.BaseDirectory, "FineAlign.Cli.dll");

    private static string[] SftArgs(string outDir, bool resume) =>
    [
        "sft", "--out", outDir, "--init", "tiny", "--context-length", "96", "--corpus-size", "60", "--batch-size", "4",
        "--max-steps", "16", "--save-steps", "2", "--save-total-limit", "2", "--logging-steps", "1", "--eval-steps", "4",
        "--samples", "0", "--seed", "5", "--threads", "1", .. (resume ? new[] { "--resume" } : []),
    ];

    /// <summary>A started CLI process; <see cref="TrainingStarted"/> is set when it prints the data summary line.</summary>
    internal sealed class CliProcess : IDisposable
    {
        public readonly Process Process;
        public readonly ManualResetEventSlim TrainingStarted = new();
        public readonly System.Text.StringBuilder Output = new();

        public CliProcess(string[] args)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(CliDll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            psi.Environment["NO_COLOR"] = "1";
            Process = new Process { StartInfo = psi };
            Process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (Output) Output.AppendLine(e.Data);
                if (e.Data.Contains("training /")) TrainingStarted.Set();
            };
            Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (Output) Output.AppendLine(e.Data); };
            Process.Start();
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }

        public int WaitForExit(int seconds = 60)
        {
            if (!Process.WaitForExit(seconds * 1000)) { Process.Kill(true); throw new TimeoutException("CLI did not finish:\n" + Output); }
            Process.WaitForExit();
            return Process.ExitCode;
        }

        public void Dispose() { if (!Process.HasExited) Process.Kill(true); Process.Dispose(); }
    }

    [Fact]
    public void Sigkill_at_random_moments_then_resume_reproduces_the_uninterrupted_run()
    {
        Assert.True(File.Exists(CliDll), $"{CliDll} not found: the test project must reference the CLI project");
        using var tmp = TestPaths.NewTempDir();
        var total = Stopwatch.StartNew();

        string straight = Path.Combine(tmp.Path, "straight");
        var clock = Stopwatch.StartNew();
        double trainingSeconds;
        using (var p = new CliProcess(SftArgs(straight, resume: false)))
        {
            Assert.True(p.TrainingStarted.Wait(TimeSpan.FromSeconds(60)), p.Output.ToString());
            double started = clock.Elapsed.TotalSeconds;
            Assert.True(p.WaitForExit() == 0, p.Output.ToString());
            trainingSeconds = Math.Max(0.2, clock.Elapsed.TotalSeconds - started);
        }
        double straightSeconds = clock.Elapsed.TotalSeconds;

        var rng = new Random(2024);
        int kills = 0, killsWithCheckpoints = 0;
        for (int run = 0; run < 3; run++)
        {
            string outDir = Path.Combine(tmp.Path, $"run{run}");
            for (int attempt = 0; attempt < 2; attempt++)
            {
                using var p = new CliProcess(SftArgs(outDir, resume: attempt > 0));
                Assert.True(p.TrainingStarted.Wait(TimeSpan.FromSeconds(60)), p.Output.ToString());
                if (attempt == 0)
                {
                    // The first kill of every run lands after a complete checkpoint exists (so resume has something
                    // to restore, whatever the machine's load), at a random moment in the next half of the training time.
                    Assert.True(WaitForCheckpoint(outDir, p, TimeSpan.FromSeconds(60)), "no checkpoint appeared:\n" + p.Output);
                    Thread.Sleep(TimeSpan.FromSeconds(rng.NextDouble() * 0.5 * trainingSeconds));
                }
                else
                {
                    // Somewhere in training, checkpoint writing or the final save (the process may also finish first).
                    Thread.Sleep(TimeSpan.FromSeconds(rng.NextDouble() * trainingSeconds));
                }
                if (!p.Process.HasExited) { p.Process.Kill(entireProcessTree: true); kills++; }
                p.Process.WaitForExit();
                if (AssertCheckpointsIntact(outDir) > 0) killsWithCheckpoints++;
            }
            // A kill in the middle of an append leaves a torn metrics line (the window is too short to hit by chance).
            if (run == 1 && File.Exists(Path.Combine(outDir, MetricsLogger.JsonlFile)))
                File.AppendAllText(Path.Combine(outDir, MetricsLogger.JsonlFile), "{\"step\":99,\"loss\":4.1");
            using (var p = new CliProcess(SftArgs(outDir, resume: true)))
                Assert.True(p.WaitForExit() == 0, p.Output.ToString());

            AssertSameRun(straight, outDir);
            Assert.Empty(Directory.GetDirectories(outDir, ".*"));   // temp folders of killed runs are cleaned up
        }
        Assert.True(kills >= 3, $"only {kills} kills landed before the process finished");
        Assert.True(killsWithCheckpoints >= 1, $"no kill left a checkpoint behind ({kills} kills)");
        // Ten CLI runs, none longer than the straight one: a budget relative to it holds on a loaded machine, a fixed
        // 90 s floor keeps the guard against a hang on a fast one.
        var budget = TimeSpan.FromSeconds(Math.Max(90, 15 * straightSeconds));
        Assert.True(total.Elapsed < budget, $"crash test took {total.Elapsed} (budget {budget}; straight run {straightSeconds:F1} s)");
    }

    /// <summary>Polls until a renamed checkpoint-N with trainer_state.json exists (or the process ends or time runs out).</summary>
    private static bool WaitForCheckpoint(string outDir, CliProcess p, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (CheckpointStore.List(outDir).Count > 0) return true;
            if (p.Process.HasExited) return CheckpointStore.List(outDir).Count > 0;
            Thread.Sleep(5);
        }
        return false;
    }

    /// <summary>Every checkpoint-N folder is complete and loadable; returns how many there are.</summary>
    internal static int AssertCheckpointsIntact(string outDir)
    {
        if (!Directory.Exists(outDir)) return 0;
        int n = 0;
        foreach (var dir in Directory.GetDirectories(outDir))
        {
            string name = Path.GetFileName(dir);
            if (name.StartsWith('.')) continue;   // hidden temp folders: never read, removed on resume
            if (name is "runs") continue;
            if (name == "model") { using (ModelIO.Load(dir)) { } continue; }
            Assert.Matches(new Regex(@"^checkpoint-\d+$"), name);
            var state = TrainerState.Load(Path.Combine(dir, CheckpointStore.StateFile));
            Assert.Equal($"checkpoint-{state.GlobalStep}", name);
            foreach (var f in new[] { CheckpointStore.OptimizerFile, CheckpointStore.RngFile, CheckpointStore.ArgsFile })
                Assert.True(new FileInfo(Path.Combine(dir, f)).Length > 0, $"{dir}/{f} missing or empty");
            using (ModelIO.Load(Path.Combine(dir, "model"))) { }
            n++;
        }
        return n;
    }

    internal static void AssertSameRun(string expectedDir, string actualDir)
    {
        // Every logged value but the wall-clock throughput, step by step, bitwise.
        static List<string> Curve(string dir) => MetricsLogger.Read(Path.Combine(dir, MetricsLogger.JsonlFile))
            .Select(m => string.Join(",", m.Where(kv => kv.Key != "tokens_per_second").OrderBy(kv => kv.Key, StringComparer.Ordinal)
                .Select(kv => $"{kv.Key}={BitConverter.DoubleToInt64Bits(kv.Value):X}")))
            .ToList();
        Assert.Equal(Curve(expectedDir), Curve(actualDir));
        using var a = ModelIO.Load(Path.Combine(expectedDir, "model"));
        using var b = ModelIO.Load(Path.Combine(actualDir, "model"));
        foreach (var ((name, pa), (_, pb)) in a.named_parameters().Zip(b.named_parameters()))
            Assert.True(pa.equal(pb).all().item<bool>(), $"weights differ: {name}");
    }
}
