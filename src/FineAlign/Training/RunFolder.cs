using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Training;

/// <summary>What a training command asks of its output folder before any work starts.</summary>
public sealed record RunFolderRequest
{
    /// <summary>The output folder, and the flag that named it (for messages in the user's words).</summary>
    public required string Folder { get; init; }
    public string FolderOption { get; init; } = "--out";
    /// <summary>The command that writes the run ("sft", "dpo", ...): a folder of another command's run is refused.</summary>
    public required string Command { get; init; }
    /// <summary>Continue the latest checkpoint (--resume), or an explicit checkpoint folder (--resume-from).</summary>
    public bool Resume { get; init; }
    public string? ResumeFrom { get; init; }
    /// <summary>TRL's overwrite_output_dir: start fresh in a folder that holds files, deleting an earlier run's outputs.</summary>
    public bool OverwriteOutputDir { get; init; }
    /// <summary>Torch threads of this run; a resume with a different count is refused unless <see cref="AllowThreadChange"/>.</summary>
    public int? TorchThreads { get; init; }
    public bool AllowThreadChange { get; init; }
    /// <summary>Total steps asked for now (to explain a changed schedule on resume); null = not known here.</summary>
    public long? MaxSteps { get; init; }
}

/// <summary>
/// An output folder claimed by one training run: an exclusive lock (<see cref="LockFile"/>, a kernel flock held for
/// the process's life, so a killed run never leaves a lock that blocks: the next run takes it over and says so) and a
/// marker (<see cref="MarkerFile"/>) naming the command that owns the folder. <see cref="Claim"/> refuses, before any
/// work: a folder in use by another live run; a non-empty folder that is not a FineAlign run of the same command; an
/// earlier finished model or checkpoints when starting fresh (unless --overwrite-output-dir); --resume with nothing
/// to resume; a resume with a different torch thread count (it breaks bit-exact resume) unless allowed.
/// Disposing releases the lock; a folder the claim created that received nothing else is removed again, so bad input
/// leaves no output behind.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockFile = ".finealign.lock";
    public const string MarkerFile = "finealign_run.json";

    /// <summary>What a FineAlign run writes into its folder (deleted by --overwrite-output-dir).</summary>
    public static readonly string[] RunOutputs =
        ["model", "policy", "value", "runs", MetricsLogger.JsonlFile, "loss.png", CheckpointStore.ArgsFile, "samples.jsonl",
         "rollouts.jsonl", "eval.json", "token_metrics.json", "reward_shift.json", "reference_logps_train.json", "reference_logps_eval.json",
         "ref_model", "ref_sync.json"];

    /// <summary>Final-model subfolders: one of these in a folder started fresh would be overwritten.</summary>
    private static readonly string[] FinalModels = ["model", "policy", "value"];

    private readonly FileStream _lock;
    private readonly bool _createdFolder;
    private bool _claimed, _disposed, _hadLock;

    private RunFolder(string path, FileStream lockStream, bool createdFolder, IReadOnlyList<string> notices)
    {
        Path = path; _lock = lockStream; _createdFolder = createdFolder; Notices = notices;
    }

    public string Path { get; }
    /// <summary>Things the user should know (a stale lock taken over, a schedule that changes on resume): one line each.</summary>
    public IReadOnlyList<string> Notices { get; }

    public static RunFolder Claim(RunFolderRequest q)
    {
        string opt = $"{q.FolderOption} {q.Folder}";
        string full = System.IO.Path.GetFullPath(q.Folder);
        if (File.Exists(full)) throw new FineAlignException($"{opt}: exists and is a file, not a folder.");
        if (q.ResumeFrom is string rf && !File.Exists(System.IO.Path.Combine(rf, CheckpointStore.StateFile)))
            throw new FineAlignException(Directory.Exists(rf)
                ? $"--resume-from {rf}: not a checkpoint folder (no {CheckpointStore.StateFile}); give a checkpoint-N folder of a run"
                : $"--resume-from {rf}: folder not found");

        for (string? up = System.IO.Path.GetDirectoryName(full); up is not null && !Directory.Exists(up); up = System.IO.Path.GetDirectoryName(up))
            if (File.Exists(up)) throw new FineAlignException($"{opt}: cannot create the folder because '{up}' is a file.");
        bool created = !Directory.Exists(full);
        try { Directory.CreateDirectory(full); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FineAlignException($"{opt}: cannot create the folder ({e.Message.ReplaceLineEndings(" ")})", e);
        }

        var notices = new List<string>();
        bool hadLock = File.Exists(System.IO.Path.Combine(full, LockFile));
        FileStream stream = Lock(full, opt, notices);
        var folder = new RunFolder(full, stream, created, notices) { _hadLock = hadLock };
        try
        {
            folder.CheckContents(q, opt, notices);
            folder.WriteMarker(q.Command);
            folder._claimed = true;
            return folder;
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    // FileShare.None is a kernel flock on Linux and macOS: exclusive between processes and released when the holder
    // dies, even by SIGKILL. The file holds the owner (pid, start time) while locked and is emptied on release, so
    // finding it non-empty after taking the lock means its last owner died: a stale lock, taken over with a notice.
    private static FileStream Lock(string full, string opt, List<string> notices)
    {
        string path = System.IO.Path.Combine(full, LockFile);
        FileStream stream;
        try { stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException)
        {
            string who = ReadMarker(full)?["owner"] is JsonObject o ? $" (pid {o["pid"]}, started {o["started"]?.GetValue<string>()})" : "";
            throw new FineAlignException($"{opt}: in use by another finealign run{who}; wait for it to finish or choose another {opt.Split(' ')[0]}.");
        }
        try
        {
            string previous = new StreamReader(stream, leaveOpen: true).ReadToEnd();
            if (previous.Length > 0 && TryOwner(previous) is (int pid, DateTime started))
            {
                if (pid != Environment.ProcessId && IsAlive(pid, started))
                    // The flock did not hold (a file system without locks): trust the owner record.
                    throw new FineAlignException($"{opt}: in use by another finealign run (pid {pid}, started {started:u}); " +
                                                 $"wait for it to finish or choose another {opt.Split(' ')[0]}.");
                notices.Add($"{opt}: took over a stale lock of finealign pid {pid} (started {started:u}), which is no longer running");
            }
            stream.SetLength(0);
            using (var w = new StreamWriter(stream, leaveOpen: true)) w.Write(OwnerJson().ToJsonString());
            stream.Flush(flushToDisk: true);
            return stream;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private void CheckContents(RunFolderRequest q, string opt, List<string> notices)
    {
        var marker = ReadMarker(Path);
        string? owner = marker?["command"]?.GetValue<string>();
        var entries = Directory.EnumerateFileSystemEntries(Path).Select(System.IO.Path.GetFileName)
            .Where(n => n is not (LockFile or MarkerFile)).ToList();
        var checkpoints = CheckpointStore.List(Path);
        bool legacyRun = owner is null && (checkpoints.Count > 0 || File.Exists(System.IO.Path.Combine(Path, CheckpointStore.ArgsFile)));
        string overwriteHint = "pass --overwrite-output-dir to delete its run outputs and start over";

        if (entries.Count > 0 && owner is not null && owner != q.Command)
        {
            if (!q.OverwriteOutputDir)
                throw new FineAlignException($"{opt}: holds a finealign '{owner}' run, not '{q.Command}'; choose another {q.FolderOption} or {overwriteHint}.");
        }
        else if (entries.Count > 0 && owner is null && !legacyRun && !q.OverwriteOutputDir)
        {
            string sample = string.Join(", ", entries.Take(3).Select(e => $"'{e}'")) + (entries.Count > 3 ? $" and {entries.Count - 3} more" : "");
            throw new FineAlignException($"{opt}: is not empty and is not a finealign run (holds {sample}); choose an empty or new folder, " +
                                         "or pass --overwrite-output-dir to write into it (files of a run's names are replaced).");
        }

        bool resuming = q.Resume || q.ResumeFrom is not null;
        if (q.OverwriteOutputDir && !resuming)
        {
            foreach (var name in entries)
                if (RunOutputs.Contains(name) || name!.StartsWith("checkpoint-", StringComparison.Ordinal) || name.StartsWith(".tmp-checkpoint-", StringComparison.Ordinal))
                {
                    string p = System.IO.Path.Combine(Path, name!);
                    if (Directory.Exists(p)) Directory.Delete(p, recursive: true); else File.Delete(p);
                }
            return;
        }

        if (q.Resume && q.ResumeFrom is null)
        {
            // As TRL (resume_from_checkpoint=True with no checkpoint raises): say so instead of silently starting over.
            if (checkpoints.Count == 0)
                throw new FineAlignException($"--resume: {opt} holds no checkpoint to resume from; run without --resume to start fresh.");
            CheckResumeState(checkpoints[^1].Path, q, notices);
        }
        else if (q.ResumeFrom is string from) CheckResumeState(from, q, notices);
        else
        {
            if (checkpoints.Count > 0)
                throw new FineAlignException($"{opt}: already holds {System.IO.Path.GetFileName(checkpoints[^1].Path)} of an earlier run; " +
                                             $"continue it with --resume, or {overwriteHint}.");
            if (FinalModels.FirstOrDefault(m => Directory.Exists(System.IO.Path.Combine(Path, m))) is string done)
                throw new FineAlignException($"{opt}: already holds the finished model of an earlier run ('{done}/'); " +
                                             $"choose another {q.FolderOption}, or {overwriteHint}.");
        }
    }

    private static void CheckResumeState(string checkpoint, RunFolderRequest q, List<string> notices)
    {
        TrainerState state;
        try { state = TrainerState.Load(System.IO.Path.Combine(checkpoint, CheckpointStore.StateFile)); }
        catch (FineAlignException) { return; }   // the trainer reports a damaged state when it loads it
        if (q.TorchThreads is int now && state.TorchNumThreads > 0 && state.TorchNumThreads != now)
        {
            string msg = $"{System.IO.Path.GetFileName(checkpoint)} was trained with {state.TorchNumThreads} torch threads, this run has {now}: " +
                         "the continued loss curve will not match an uninterrupted run bit for bit";
            if (!q.AllowThreadChange)
                throw new FineAlignException($"--resume: {msg}; resume with --threads {state.TorchNumThreads}, or accept it with --allow-thread-change.");
            notices.Add("warning: " + msg + " (--allow-thread-change)");
        }
        if (q.MaxSteps is long steps && steps > 0 && state.MaxSteps > 0 && steps != state.MaxSteps)
            notices.Add($"note: resuming step {state.GlobalStep} of a {state.MaxSteps}-step run with {steps} total steps: the learning-rate " +
                        $"schedule (warm-up and decay) is recomputed for {steps} steps, so the rate changes at step {state.GlobalStep} " +
                        "and the run is not the same as one started with the new total");
    }

    private void WriteMarker(string command)
    {
        var marker = ReadMarker(Path) ?? new JsonObject { ["command"] = command, ["created"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture) };
        marker["command"] = command;
        marker["owner"] = OwnerJson();
        AtomicFile.WriteAllText(System.IO.Path.Combine(Path, MarkerFile), marker.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static JsonObject? ReadMarker(string folder)
    {
        string p = System.IO.Path.Combine(folder, MarkerFile);
        if (!File.Exists(p)) return null;
        try { return JsonNode.Parse(File.ReadAllText(p)) as JsonObject; }
        catch (JsonException) { return null; }
    }

    private static JsonObject OwnerJson()
    {
        using var me = Process.GetCurrentProcess();
        return new JsonObject
        {
            ["pid"] = Environment.ProcessId,
            ["started"] = me.StartTime.ToUniversalTime().ToString("o", CultureInfo.InvariantCulture),
            ["host"] = Environment.MachineName,
        };
    }

    private static (int, DateTime)? TryOwner(string json)
    {
        try
        {
            if (JsonNode.Parse(json) is JsonObject o && o["pid"]?.GetValue<int>() is int pid &&
                DateTime.TryParse(o["started"]?.GetValue<string>(), CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var t))
                return (pid, t.ToUniversalTime());
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException) { }
        return null;
    }

    // Same pid and the same start time (pids are reused): that process still runs.
    private static bool IsAlive(int pid, DateTime startedUtc)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited && Math.Abs((p.StartTime.ToUniversalTime() - startedUtc).TotalSeconds) < 2;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception) { return false; }
    }

    /// <summary>Releases the lock; removes the folder again if this claim created it and nothing else was written.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        bool onlyOurs = Directory.Exists(Path) && Directory.EnumerateFileSystemEntries(Path)
            .All(e => System.IO.Path.GetFileName(e) is LockFile or MarkerFile);
        try
        {
            if (onlyOurs)
            {
                // Nothing was written: leave the folder as it was (gone, if the claim made it).
                File.Delete(System.IO.Path.Combine(Path, MarkerFile));
                File.Delete(System.IO.Path.Combine(Path, LockFile));
            }
            else if (!_claimed && !_hadLock) File.Delete(System.IO.Path.Combine(Path, LockFile));   // refused: leave the folder as found
            else _lock.SetLength(0);   // an empty lock file = released cleanly
        }
        catch (IOException) { }
        _lock.Dispose();
        if (onlyOurs && _createdFolder)
            try { Directory.Delete(Path); } catch (IOException) { }
    }
}
