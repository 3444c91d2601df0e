namespace FineAlign.Cli;

/// <summary>
/// Writes a command's output files all-or-nothing: into a hidden temporary sibling folder first, then moved into
/// place only when every file is complete. On error the temporary folder is deleted and the target is untouched.
/// </summary>
public static class OutputFolder
{
    public static T Write<T>(string outDir, Func<string, T> write)
    {
        string full = Path.GetFullPath(outDir);
        if (File.Exists(full)) throw new FineAlignException($"output path '{outDir}' is a file, expected a folder");
        string parent = Path.GetDirectoryName(full) ?? throw new FineAlignException($"output path '{outDir}' has no parent folder");
        try { Directory.CreateDirectory(parent); }
        catch (IOException ex) { throw new FineAlignException($"cannot create the folder for '{outDir}': {ex.Message}", ex); }

        string temp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}"[..^20]);
        Directory.CreateDirectory(temp);
        try
        {
            T result = write(temp);
            if (!Directory.Exists(full))
                Directory.Move(temp, full);          // atomic on one file system
            else
            {
                foreach (var file in Directory.EnumerateFiles(temp))
                    File.Move(file, Path.Combine(full, Path.GetFileName(file)), overwrite: true);
                Directory.Delete(temp, recursive: true);
            }
            return result;
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }
}
