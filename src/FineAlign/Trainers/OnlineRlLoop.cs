using System.Diagnostics;
using System.Text.Json;
using FineAlign.Training;

namespace FineAlign.Trainers;

/// <summary>
/// The outer loop of the online RL trainers (PPO, GRPO/RLOO/REINFORCE++): resume the latest checkpoint or
/// refuse a folder holding another run's, run steps, log every N, report progress, checkpoint on schedule
/// and at the end, then save the final models. Each trainer supplies its step and its checkpoint contents.
/// </summary>
internal static class OnlineRlLoop
{
    public sealed record Settings(string OutputDir, int Steps, int BatchSize, int LoggingSteps, int SaveSteps,
                                  bool Resume, bool SaveRollouts, string RolloutsFile, bool WriteTensorBoard);

    public sealed record Outcome(int Steps, List<Dictionary<string, double>> LogHistory, string? LastCheckpoint, bool Completed);

    /// <param name="step">Runs update number step (1-based), appending rollouts to the path when given; returns its metrics.</param>
    /// <param name="loadCheckpoint">Restores a checkpoint folder, fills the log history, returns its step.</param>
    /// <param name="saveCheckpoint">Writes checkpoint-step (atomically) and returns its folder.</param>
    /// <param name="describe">The progress report of a finished step.</param>
    /// <param name="saveFinal">Saves the finished models into the output folder.</param>
    public static Outcome Run(Settings s, Func<int, string?, Dictionary<string, double>> step,
        Func<string, List<Dictionary<string, double>>, int> loadCheckpoint,
        Func<int, List<Dictionary<string, double>>, string> saveCheckpoint,
        Func<int, Dictionary<string, double>, ProgressUpdate> describe, IProgress<ProgressUpdate>? progress,
        Action saveFinal, CancellationToken cancellation)
    {
        Directory.CreateDirectory(s.OutputDir);
        CheckpointStore.CleanTemporary(s.OutputDir);
        int start = 0;
        var history = new List<Dictionary<string, double>>();
        string? last = null;
        if (s.Resume && CheckpointStore.Latest(s.OutputDir) is string ck)
        {
            start = loadCheckpoint(ck, history);
            last = ck;
        }
        else if (CheckpointStore.Latest(s.OutputDir) is string existing)
            throw new FineAlignException($"output folder '{s.OutputDir}' already holds {Path.GetFileName(existing)}; resume it (--resume) or choose another --out");
        var logger = new MetricsLogger(s.OutputDir, start, s.WriteTensorBoard);
        string rolloutsPath = Path.Combine(s.OutputDir, s.RolloutsFile);
        if (s.SaveRollouts) TrimRollouts(rolloutsPath, start);

        var clock = Stopwatch.StartNew();
        int current = start;
        while (current < s.Steps && !cancellation.IsCancellationRequested)
        {
            current++;
            var metrics = step(current, s.SaveRollouts ? rolloutsPath : null);
            metrics["episode"] = (double)current * s.BatchSize;
            metrics["eps"] = (double)(current - start) * s.BatchSize / Math.Max(1e-9, clock.Elapsed.TotalSeconds); // episodes per second (this process)
            if (current % s.LoggingSteps == 0 || current == s.Steps)
            {
                var entry = new Dictionary<string, double> { ["step"] = current };
                foreach (var kv in metrics) entry[kv.Key] = kv.Value;
                logger.Log(entry);
                history.Add(entry);
            }
            progress?.Report(describe(current, metrics));
            if ((s.SaveSteps > 0 && current % s.SaveSteps == 0) || current == s.Steps) last = saveCheckpoint(current, history);
        }
        if (last is null || !last.EndsWith($"checkpoint-{current}", StringComparison.Ordinal)) last = saveCheckpoint(current, history);
        bool done = current >= s.Steps;
        if (done) saveFinal();
        return new Outcome(current, history, last, done);
    }

    /// <summary>Drops rollouts logged after <paramref name="keepThrough"/> (a resumed run rewrites them).</summary>
    public static void TrimRollouts(string path, int keepThrough)
    {
        if (!File.Exists(path)) return;
        if (keepThrough == 0) { File.Delete(path); return; }
        var kept = File.ReadLines(path).Where(l => l.Length > 0 && JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32() <= keepThrough).ToList();
        File.WriteAllLines(path, kept);
    }
}
