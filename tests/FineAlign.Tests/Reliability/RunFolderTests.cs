using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Training;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// Output-folder protection (lock, same-command check, resume checks) in the library and through the CLI, and signal
/// handling of the real CLI process (SIGINT twice, SIGTERM).
/// </summary>
[Collection("Serial torch RNG")]
public class RunFolderTests
{
    private static RunFolderRequest Request(string dir, string command = "sft") => new() { Folder = dir, Command = command };

    [Fact]
    public void A_claim_that_writes_nothing_leaves_no_folder_and_a_second_claim_is_refused_while_the_first_holds()
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Path.Combine(tmp.Path, "run");
        using (var first = RunFolder.Claim(Request(dir)))
        {
            Assert.True(File.Exists(Path.Combine(dir, RunFolder.MarkerFile)));
            var e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(Request(dir)));
            Assert.Contains($"--out {dir}: in use by another finealign run (pid {Environment.ProcessId}", e.Message);
        }
        Assert.False(Directory.Exists(dir), "a claim with no output must not leave the folder behind");
    }

    [Fact]
    public void A_lock_left_by_a_dead_process_is_taken_over_with_a_notice()
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Directory.CreateDirectory(Path.Combine(tmp.Path, "run")).FullName;
        File.WriteAllText(Path.Combine(dir, "metrics.jsonl"), "{\"step\":1}\n");
        File.WriteAllText(Path.Combine(dir, RunFolder.MarkerFile), "{\"command\":\"sft\"}");
        int deadPid;
        using (var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!) { p.WaitForExit(); deadPid = p.Id; }
        File.WriteAllText(Path.Combine(dir, RunFolder.LockFile), $"{{\"pid\":{deadPid},\"started\":\"2026-01-01T00:00:00.0000000Z\"}}");
        using var claim = RunFolder.Claim(Request(dir));
        Assert.Contains(claim.Notices, n => n.Contains($"took over a stale lock of finealign pid {deadPid}") && n.Contains("no longer running"));
    }

    [Fact]
    public void A_folder_of_user_files_or_of_another_command_is_refused_unless_overwrite_output_dir()
    {
        using var tmp = TestPaths.NewTempDir();
        string mine = Directory.CreateDirectory(Path.Combine(tmp.Path, "mine")).FullName;
        File.WriteAllText(Path.Combine(mine, "metrics.jsonl"), "my own notes\n");
        File.WriteAllText(Path.Combine(mine, "notes.txt"), "keep me");
        var e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(Request(mine)));
        Assert.Contains("is not empty and is not a finealign run (holds 'metrics.jsonl', 'notes.txt')", e.Message);
        Assert.Contains("--overwrite-output-dir", e.Message);
        Assert.Equal("my own notes\n", File.ReadAllText(Path.Combine(mine, "metrics.jsonl")));

        using (RunFolder.Claim(Request(mine) with { OverwriteOutputDir = true }))
        {
            Assert.False(File.Exists(Path.Combine(mine, "metrics.jsonl")));   // a run output name: replaced
            Assert.Equal("keep me", File.ReadAllText(Path.Combine(mine, "notes.txt")));
        }

        string dpoRun = Directory.CreateDirectory(Path.Combine(tmp.Path, "dpo")).FullName;
        File.WriteAllText(Path.Combine(dpoRun, RunFolder.MarkerFile), "{\"command\":\"dpo\"}");
        File.WriteAllText(Path.Combine(dpoRun, "metrics.jsonl"), "{\"step\":1}\n");
        e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(Request(dpoRun, "sft")));
        Assert.Contains("holds a finealign 'dpo' run, not 'sft'", e.Message);
    }

    [Fact]
    public void A_fresh_start_over_a_finished_model_or_checkpoints_is_refused_and_resume_needs_a_checkpoint()
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Directory.CreateDirectory(Path.Combine(tmp.Path, "run")).FullName;
        File.WriteAllText(Path.Combine(dir, RunFolder.MarkerFile), "{\"command\":\"sft\"}");
        Directory.CreateDirectory(Path.Combine(dir, "model"));
        var e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(Request(dir)));
        Assert.Contains("already holds the finished model of an earlier run ('model/')", e.Message);

        e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(Request(dir) with { Resume = true }));
        Assert.Contains("--resume: --out", e.Message);
        Assert.Contains("holds no checkpoint to resume from; run without --resume to start fresh", e.Message);

        WriteCheckpoint(dir, step: 4, threads: 3, maxSteps: 10);
        e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(Request(dir)));
        Assert.Contains("already holds checkpoint-4 of an earlier run; continue it with --resume", e.Message);
    }

    [Fact]
    public void Resume_with_other_threads_is_refused_unless_allowed_and_a_new_max_steps_is_explained()
    {
        using var tmp = TestPaths.NewTempDir();
        string dir = Directory.CreateDirectory(Path.Combine(tmp.Path, "run")).FullName;
        File.WriteAllText(Path.Combine(dir, RunFolder.MarkerFile), "{\"command\":\"sft\"}");
        WriteCheckpoint(dir, step: 4, threads: 3, maxSteps: 10);

        var resume = Request(dir) with { Resume = true, TorchThreads = 1, MaxSteps = 10 };
        var e = Assert.Throws<FineAlignException>(() => RunFolder.Claim(resume));
        Assert.Contains("checkpoint-4 was trained with 3 torch threads, this run has 1", e.Message);
        Assert.Contains("resume with --threads 3, or accept it with --allow-thread-change", e.Message);

        using (var same = RunFolder.Claim(resume with { TorchThreads = 3 })) Assert.Empty(same.Notices);
        using var allowed = RunFolder.Claim(resume with { AllowThreadChange = true, MaxSteps = 20 });
        Assert.Contains(allowed.Notices, n => n.StartsWith("warning: checkpoint-4 was trained with 3 torch threads"));
        Assert.Contains(allowed.Notices, n => n.Contains("resuming step 4 of a 10-step run with 20 total steps") && n.Contains("recomputed for 20 steps"));
    }

    private static void WriteCheckpoint(string dir, long step, int threads, long maxSteps)
    {
        string ck = Directory.CreateDirectory(CheckpointStore.PathFor(dir, step)).FullName;
        new TrainerState { GlobalStep = step, TorchNumThreads = threads, MaxSteps = maxSteps }.Save(Path.Combine(ck, CheckpointStore.StateFile));
    }

    // ---------------------------------------------------------------- through the CLI, with real processes

    private static string[] LongSft(string outDir) =>
    [
        "sft", "--out", outDir, "--init", "tiny", "--context-length", "96", "--corpus-size", "60", "--batch-size", "4",
        "--max-steps", "100000", "--save-steps", "0", "--logging-steps", "1", "--eval-steps", "0", "--samples", "0", "--seed", "5", "--threads", "1",
    ];

    [Fact]
    public void A_second_run_on_the_same_out_fails_at_once_while_the_first_runs_and_user_files_are_never_touched()
    {
        using var tmp = TestPaths.NewTempDir();
        string outDir = Path.Combine(tmp.Path, "run");
        using (var first = new CrashResumeTests.CliProcess(LongSft(outDir)))
        {
            Assert.True(first.TrainingStarted.Wait(TimeSpan.FromSeconds(60)), first.Output.ToString());
            var clock = Stopwatch.StartNew();
            var r = CliRunner.Run([.. LongSft(outDir), "--resume"]);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"the second run took {clock.Elapsed} to fail");
            MalformedInputTests.AssertOneLineError(r, outDir, $"in use by another finealign run (pid {first.Process.Id}");
            Assert.False(first.Process.HasExited, "the second run disturbed the first");
        }

        string users = Directory.CreateDirectory(Path.Combine(tmp.Path, "users")).FullName;
        File.WriteAllText(Path.Combine(users, "loss.png"), "my plot");
        var refused = CliRunner.Run(HostileInputTests.Train("sft", users));
        MalformedInputTests.AssertOneLineError(refused, users, "is not empty and is not a finealign run (holds 'loss.png')");
        Assert.Equal("my plot", File.ReadAllText(Path.Combine(users, "loss.png")));
        Assert.Equal(["loss.png"], Directory.GetFileSystemEntries(users).Select(Path.GetFileName));
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    [DllImport("libc", EntryPoint = "signal")]
    private static extern IntPtr set_signal(int sig, IntPtr handler);

    /// <summary>
    /// A script's background job (`cmd &` without job control, as a CI script may be started) begins with SIGINT
    /// ignored, and .NET — like a shell, like Python — keeps an inherited SIG_IGN for SIGINT, so the child would never
    /// see the test's Ctrl+C (the CLI is right to keep it: that is how such jobs avoid a terminal's Ctrl+C). The test is
    /// about our handler, so its child gets the default disposition to inherit. Only when ignored: then no terminal
    /// Ctrl+C can reach this process either.
    /// </summary>
    private static void UnignoreSigintForChildren()
    {
        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        if (line is null) return;
        ulong ignored = Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16);
        if ((ignored & (1UL << (SIGINT - 1))) != 0) set_signal(SIGINT, IntPtr.Zero);   // SIG_DFL
    }

    private const int SIGINT = 2, SIGTERM = 15;

    [Theory]
    [InlineData(SIGINT, 130)]
    [InlineData(SIGTERM, 143)]
    public void A_signal_stops_training_with_a_checkpoint_and_the_shell_exit_code(int signal, int exitCode)
    {
        using var tmp = TestPaths.NewTempDir();
        string outDir = Path.Combine(tmp.Path, "run");
        if (signal == SIGINT) UnignoreSigintForChildren();
        using var p = new CrashResumeTests.CliProcess(LongSft(outDir));
        Assert.True(p.TrainingStarted.Wait(TimeSpan.FromSeconds(60)), p.Output.ToString());
        // Into the training loop: a signal before the first step has nothing to checkpoint.
        var wait = Stopwatch.StartNew();
        while (!p.Output.ToString().Contains(" train 1/") && wait.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(20);
        Assert.Equal(0, kill(p.Process.Id, signal));
        if (signal == SIGINT)
        {
            Thread.Sleep(20);   // the impatient second Ctrl+C
            kill(p.Process.Id, signal);
        }
        int code = p.WaitForExit(60);
        string output = p.Output.ToString();
        Assert.True(code == exitCode, $"exit {code}, expected {exitCode}:\n{output}");
        Assert.DoesNotContain("Exception", output);
        Assert.DoesNotContain("   at ", output);   // no stack trace
        Assert.Contains("Continue with --resume", output);
        Assert.True(CrashResumeTests.AssertCheckpointsIntact(outDir) >= 1, "no checkpoint was saved on the signal:\n" + output);
    }
}
